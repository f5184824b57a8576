// TensorRT IPluginV3 wrapper of the pixel-wise dilation filter (MODELS_SPEC section 1).
//
// Plugin "DilationFilter", version "1", namespace "". Inputs: image (N, C, H, W) and kernels
// (N, 9C, H, W); output (N, C*D, H, W) with channel C*m + c = dilation m, colour c. One plugin field,
// `dilations` (INT32 array, 1..EDR_MAX_DILATIONS values >= 1, default [1, 2, 3, 4]).
//
// Only TensorRT's headers are needed: every interface used here is abstract or inline, so the plugin
// library links no TensorRT library and TensorRT (10.x, 11.x or TensorRT-RTX, whichever headers it was
// built against) finds it through the entry points in pluginRegistration.cpp.
#pragma once

#include "NvInferRuntime.h"
#include "pluginBase.h"

#if !defined(TRT_MAJOR_RTX) && NV_TENSORRT_MAJOR < 10
#error "DilationFilterPlugin implements IPluginV3, which needs TensorRT >= 10 (or TensorRT-RTX) headers"
#endif

#include <cstdint>
#include <vector>

namespace edge_derain {

class DilationFilterPlugin final : public PluginV3Base<DilationFilterPlugin> {
public:
    static constexpr char const* kName = "DilationFilter";

    //! `dilations` must already be validated (see DilationFilterPluginCreator::createPlugin).
    explicit DilationFilterPlugin(std::vector<int32_t> dilations);
    DilationFilterPlugin(DilationFilterPlugin const&) = delete;
    DilationFilterPlugin& operator=(DilationFilterPlugin const&) = delete;
    ~DilationFilterPlugin() override = default;

    //! A new plugin with these fields (PluginV3Base::clone); may throw std::bad_alloc.
    DilationFilterPlugin* copy() const;

    // IPluginV3OneBuild (no CUDA calls in any of these: they run on build machines without a GPU)
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                               nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                            int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                    void const* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    std::vector<int32_t> const& dilations() const noexcept { return mDilations; }

private:
    std::vector<int32_t> mDilations;
    nvinfer1::PluginField mSerializedField;
    nvinfer1::PluginFieldCollection mSerializedFields;
};

class DilationFilterPluginCreator final : public PluginCreatorBase<DilationFilterPlugin> {
public:
    DilationFilterPluginCreator();

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    //! Returns nullptr (after logging why) for invalid fields: a wrong type or count of `dilations`, a
    //! dilation < 1, or a spec attribute (kernel_size, padding, kernel_layout, output_layout) with a value
    //! this plugin does not implement.
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection;
};

} // namespace edge_derain
