// TensorRT IPluginV3 wrapper of the transposed (channel) attention (MODELS_SPEC section 2).
//
// Plugin "TransposedAttention", version "1", namespace "". Inputs: q, k, v (N, C, H, W), temperature
// (num_heads,) and, required for modes dual/multi and optional for dense/sparse, branch_weights
// (num_branches,); output (N, C, H, W). Plugin fields: `num_heads` (INT32, >= 1, required), `mode`
// (CHAR: dense, sparse, dual or multi; default dense), `topk` (INT32 array: none for dense, one value
// for sparse/dual, 1..EDR_MAX_ATTENTION_BRANCHES for multi; each >= 1) and `eps` (FLOAT32 > 0,
// default 1e-12).
//
// Like DilationFilterPlugin.h, only TensorRT's headers are needed: no TensorRT library is linked.
#pragma once

#include "NvInferRuntime.h"
#include "pluginBase.h"

#if !defined(TRT_MAJOR_RTX) && NV_TENSORRT_MAJOR < 10
#error "TransposedAttentionPlugin implements IPluginV3, which needs TensorRT >= 10 (or TensorRT-RTX) headers"
#endif

#include "edge_derain/kernels.h"

#include <cstdint>
#include <string>
#include <vector>

namespace edge_derain {

//! The plugin fields, validated by TransposedAttentionPluginCreator::createPlugin.
struct AttentionConfig {
    int32_t numHeads = 1;
    edr_attention_mode mode = EDR_ATTENTION_DENSE;
    std::vector<int32_t> topk; //!< empty for dense
    float eps = 1e-12f;        //!< PyTorch F.normalize's default (spec section 0.2)

    //! Attention maps combined by the branch weights: 1 for dense/sparse, 2 for dual, len(topk) for multi.
    int32_t numBranches() const noexcept;
    //! Dual and multi have one free weight per branch, so their branch_weights input is required.
    bool needsBranchWeights() const noexcept;
};

class TransposedAttentionPlugin final : public PluginV3Base<TransposedAttentionPlugin> {
public:
    static constexpr char const* kName = "TransposedAttention";

    explicit TransposedAttentionPlugin(AttentionConfig config);
    TransposedAttentionPlugin(TransposedAttentionPlugin const&) = delete;
    TransposedAttentionPlugin& operator=(TransposedAttentionPlugin const&) = delete;
    ~TransposedAttentionPlugin() override = default;

    //! A new plugin with these fields and input count (PluginV3Base::clone); may throw std::bad_alloc.
    TransposedAttentionPlugin* copy() const;

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
    //! The kernels' scratch (split-K partial sums, Gram matrices, attention maps) for the profile's largest q,
    //! inputs[0].max: the size never decreases with N, H or W.
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* outputs,
                            int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                    void const* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    AttentionConfig const& config() const noexcept { return mConfig; }

private:
    AttentionConfig mConfig;
    std::string mModeName;
    // Whether branch_weights is connected (4 or 5 inputs) is not a plugin field: enqueue, which is not
    // told the input count, learns it from configurePlugin / onShapeChange (0 until then).
    int32_t mNbInputs = 0;
    std::vector<nvinfer1::PluginField> mSerializedFields;
    nvinfer1::PluginFieldCollection mSerializedFieldCollection;
};

class TransposedAttentionPluginCreator final : public PluginCreatorBase<TransposedAttentionPlugin> {
public:
    TransposedAttentionPluginCreator();

    //! Lists every field the plugin reads: TensorRT's ONNX parser passes on only the attributes named here.
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    //! Returns nullptr (after logging why) for invalid fields: num_heads missing or < 1, an unknown mode,
    //! a topk count the mode does not take, a topk value < 1 or above EDR_MAX_HEAD_CHANNELS, an eps that
    //! is not a positive finite float, or a field of the wrong type.
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection;
};

} // namespace edge_derain
