#include "DilationFilterPlugin.h"
#include "pluginUtils.h"

#include "edge_derain/kernels.h"

#include <exception>
#include <limits>
#include <string>
#include <utility>

namespace edge_derain {
namespace {

constexpr char const* kPluginName = DilationFilterPlugin::kName;
constexpr int32_t kNbInputs = 2; // image, kernels
constexpr int32_t kNbOutputs = 1;
constexpr int64_t kTaps = 9;     // 3x3 kernel per colour

void log(ILogger::Severity severity, std::string const& message) noexcept {
    pluginLog(kPluginName, severity, message);
}

void logError(std::string const& message) noexcept { log(ILogger::Severity::kERROR, message); }

// Describes what is wrong with an (image, kernels) shape pair, or returns "" when consistent. A
// dimension of -1 (unknown until runtime) matches anything.
std::string shapeProblem(Dims const& image, Dims const& kernels) {
    if (image.nbDims != 4 || kernels.nbDims != 4) {
        return "image and kernels must be 4-D NCHW tensors, got image " + dimsToString(image) + " and kernels " +
               dimsToString(kernels);
    }
    auto differ = [](int64_t a, int64_t b) { return a >= 0 && b >= 0 && a != b; };
    for (int32_t axis : {0, 2, 3}) {
        if (differ(image.d[axis], kernels.d[axis])) {
            return "kernels " + dimsToString(kernels) + " must have the batch size, height and width of image " +
                   dimsToString(image) + "; pass the KPN output at the input image's resolution";
        }
    }
    if (image.d[1] >= 0 && differ(kTaps * image.d[1], kernels.d[1])) {
        return "kernels must have " + std::to_string(kTaps * image.d[1]) + " channels for a " +
               std::to_string(image.d[1]) + "-channel image, got " + std::to_string(kernels.d[1]) +
               "; pass the KPN's raw 9*C-channel output";
    }
    return "";
}

bool checkShapes(Dims const& image, Dims const& kernels) noexcept {
    std::string const problem = shapeProblem(image, kernels);
    if (!problem.empty()) {
        logError(problem);
    }
    return problem.empty();
}

bool checkIoCounts(int32_t nbInputs, int32_t nbOutputs) noexcept {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
        logError("expects 2 inputs (image, kernels) and 1 output, got " + std::to_string(nbInputs) + " inputs and " +
                 std::to_string(nbOutputs) + " outputs");
        return false;
    }
    return true;
}

} // namespace

// ---------------------------------------------------------------------------------------------------
// DilationFilterPlugin

DilationFilterPlugin::DilationFilterPlugin(std::vector<int32_t> dilations)
    : mDilations(std::move(dilations)),
      mSerializedField("dilations", mDilations.data(), PluginFieldType::kINT32,
                       static_cast<int32_t>(mDilations.size())),
      mSerializedFields{1, &mSerializedField} {}

DilationFilterPlugin* DilationFilterPlugin::copy() const { return new DilationFilterPlugin(mDilations); }

int32_t DilationFilterPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                              DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
    if (!checkIoCounts(nbInputs, nbOutputs)) {
        return -1;
    }
    return checkShapes(in[0].desc.dims, in[1].desc.dims) ? 0 : -1;
}

int32_t DilationFilterPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                                 DataType const* inputTypes, int32_t nbInputs) const noexcept {
    if (!checkIoCounts(nbInputs, nbOutputs)) {
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t DilationFilterPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
                                              DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/,
                                              DimsExprs* outputs, int32_t nbOutputs,
                                              nvinfer1::IExprBuilder& exprBuilder) noexcept {
    if (!checkIoCounts(nbInputs, nbOutputs) || !checkShapes(constantDims(inputs[0]), constantDims(inputs[1]))) {
        return -1;
    }
    DimsExprs const& image = inputs[0];
    outputs[0].nbDims = 4;
    outputs[0].d[0] = image.d[0];
    outputs[0].d[1] = exprBuilder.operation(nvinfer1::DimensionOperation::kPROD, *image.d[1],
                                            *exprBuilder.constant(static_cast<int64_t>(mDilations.size())));
    outputs[0].d[2] = image.d[2];
    outputs[0].d[3] = image.d[3];
    return 0;
}

bool DilationFilterPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                                     int32_t nbInputs, int32_t nbOutputs) noexcept {
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= kNbInputs + kNbOutputs) {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR) {
        return false;
    }
    if (pos == 0) {
        return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    }
    return desc.type == inOut[0].desc.type; // kernels and output follow the image's type
}

int32_t DilationFilterPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                            PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
    if (!checkIoCounts(nbInputs, nbOutputs)) {
        return -1;
    }
    return checkShapes(in[0].dims, in[1].dims) ? 0 : -1;
}

int32_t DilationFilterPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
                                      void const* const* inputs, void* const* outputs, void* /*workspace*/,
                                      cudaStream_t stream) noexcept {
    Dims const& dims = inputDesc[0].dims;
    for (int32_t i = 0; i < 4; ++i) {
        if (dims.d[i] > std::numeric_limits<int>::max()) {
            logError("image dimension " + std::to_string(dims.d[i]) + " exceeds the kernel's int range");
            return static_cast<int32_t>(cudaErrorInvalidValue);
        }
    }
    int const dtype = inputDesc[0].type == DataType::kHALF ? EDR_FLOAT16 : EDR_FLOAT32;
    int const status = edr_dilation_filter(inputs[0], inputs[1], outputs[0], dtype, static_cast<int>(dims.d[0]),
                                           static_cast<int>(dims.d[1]), static_cast<int>(dims.d[2]),
                                           static_cast<int>(dims.d[3]), mDilations.data(),
                                           static_cast<int>(mDilations.size()), stream);
    if (status != 0) {
        logError(std::string("kernel launch failed: ") + edr_error_string(status));
    }
    return status;
}

PluginFieldCollection const* DilationFilterPlugin::getFieldsToSerialize() noexcept { return &mSerializedFields; }

// ---------------------------------------------------------------------------------------------------
// DilationFilterPluginCreator

DilationFilterPluginCreator::DilationFilterPluginCreator()
    // The length advertised is the default's (4); any count in 1..EDR_MAX_DILATIONS is accepted.
    : mFieldNames{PluginField("dilations", nullptr, PluginFieldType::kINT32, 4)},
      mFieldCollection{static_cast<int32_t>(mFieldNames.size()), mFieldNames.data()} {}

PluginFieldCollection const* DilationFilterPluginCreator::getFieldNames() noexcept { return &mFieldCollection; }

nvinfer1::IPluginV3* DilationFilterPluginCreator::createPlugin(char const* /*name*/, PluginFieldCollection const* fc,
                                                               nvinfer1::TensorRTPhase /*phase*/) noexcept {
    try {
        std::vector<int32_t> dilations{1, 2, 3, 4}; // spec default when the field is absent
        std::vector<int64_t> ints;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
            PluginField const& field = fc->fields[i];
            std::string const name = field.name != nullptr ? field.name : "";
            if (name == "dilations") {
                if (!readInts(field, &ints) || ints.empty() || ints.size() > EDR_MAX_DILATIONS) {
                    logError("field 'dilations' must be an INT32 array of 1.." + std::to_string(EDR_MAX_DILATIONS) +
                             " values, got type " + std::to_string(static_cast<int>(field.type)) + " with " +
                             std::to_string(field.length) + " values");
                    return nullptr;
                }
                dilations.clear();
                for (int64_t d : ints) {
                    if (d < 1 || d > std::numeric_limits<int32_t>::max()) {
                        logError("every dilation must be an integer >= 1, got " + std::to_string(d));
                        return nullptr;
                    }
                    dilations.push_back(static_cast<int32_t>(d));
                }
            } else if (name == "kernel_size") {
                if (!readInts(field, &ints) || ints.size() != 1 || ints[0] != 3) {
                    logError("only kernel_size = 3 is implemented (the EfficientDeRain filter)");
                    return nullptr;
                }
            } else if (name == "padding" || name == "kernel_layout" || name == "output_layout") {
                std::string const expected =
                    name == "padding" ? "zeros" : (name == "kernel_layout" ? "color_major" : "dilation_major");
                if (field.type != PluginFieldType::kCHAR || readString(field) != expected) {
                    logError("only " + name + " = '" + expected + "' is implemented");
                    return nullptr;
                }
            } else if (name != "plugin_version" && name != "plugin_namespace") {
                // plugin_version/plugin_namespace select the creator in the ONNX parser, which may pass them on.
                log(ILogger::Severity::kWARNING, "ignoring unknown field '" + name + "'");
            }
        }
        return new DilationFilterPlugin(std::move(dilations));
    } catch (std::exception const& e) {
        logError(std::string("createPlugin failed: ") + e.what());
    }
    return nullptr;
}

} // namespace edge_derain
