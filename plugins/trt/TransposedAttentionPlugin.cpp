#include "TransposedAttentionPlugin.h"
#include "pluginUtils.h"

#include <cmath>
#include <exception>
#include <limits>
#include <string>
#include <utility>

namespace edge_derain {
namespace {

constexpr char const* kPluginName = TransposedAttentionPlugin::kName;
constexpr int32_t kNbOutputs = 1;
// Input positions.
constexpr int32_t kQ = 0;
constexpr int32_t kTemperature = 3;
constexpr int32_t kBranchWeights = 4;
constexpr int32_t kNbInputsWithoutWeights = 4;
constexpr int32_t kNbInputsWithWeights = 5;

// Indexed by edr_attention_mode.
constexpr char const* kModeNames[] = {"dense", "sparse", "dual", "multi"};
constexpr int32_t kNbModes = static_cast<int32_t>(sizeof(kModeNames) / sizeof(kModeNames[0]));

void log(ILogger::Severity severity, std::string const& message) noexcept {
    pluginLog(kPluginName, severity, message);
}

void logError(std::string const& message) noexcept { log(ILogger::Severity::kERROR, message); }

std::string typeName(DataType type) {
    switch (type) {
    case DataType::kFLOAT: return "FP32";
    case DataType::kHALF: return "FP16";
    default: return "type " + std::to_string(static_cast<int>(type));
    }
}

bool isFloatType(DataType type) { return type == DataType::kFLOAT || type == DataType::kHALF; }

int kernelDtype(DataType type) { return type == DataType::kHALF ? EDR_FLOAT16 : EDR_FLOAT32; }

std::string modeName(edr_attention_mode mode) { return kModeNames[static_cast<int32_t>(mode)]; }

bool ioCountsFit(AttentionConfig const& config, int32_t nbInputs, int32_t nbOutputs) noexcept {
    bool const inputsOk = nbInputs == kNbInputsWithWeights ||
                          (nbInputs == kNbInputsWithoutWeights && !config.needsBranchWeights());
    return inputsOk && nbOutputs == kNbOutputs;
}

// Describes why (nbInputs, nbOutputs) do not fit the mode, or returns "" when they do.
std::string ioCountProblem(AttentionConfig const& config, int32_t nbInputs, int32_t nbOutputs) {
    if (ioCountsFit(config, nbInputs, nbOutputs)) {
        return "";
    }
    std::string const expected = config.needsBranchWeights()
                                     ? "5 inputs (q, k, v, temperature, branch_weights)"
                                     : "4 or 5 inputs (q, k, v, temperature[, branch_weights])";
    return "mode '" + modeName(config.mode) + "' takes " + expected + " and 1 output, got " +
           std::to_string(nbInputs) + " inputs and " + std::to_string(nbOutputs) + " outputs";
}

bool checkIoCounts(AttentionConfig const& config, int32_t nbInputs, int32_t nbOutputs) noexcept {
    std::string const problem = ioCountProblem(config, nbInputs, nbOutputs);
    if (!problem.empty()) {
        logError(problem);
    }
    return problem.empty();
}

// Checks a 1-D parameter input (temperature, branch_weights) against its expected length.
std::string paramProblem(char const* name, Dims const& dims, int64_t expected, std::string const& meaning) {
    if (dims.nbDims != 1 || (dims.d[0] >= 0 && dims.d[0] != expected)) {
        return std::string(name) + " must have shape (" + std::to_string(expected) + ",), " + meaning + ", got " +
               dimsToString(dims);
    }
    return "";
}

// Describes what is wrong with the input shapes (nbInputs already checked), or returns "" when they are
// consistent. A dimension of -1 (unknown until runtime) matches anything.
std::string shapeProblem(AttentionConfig const& config, Dims const* inputs, int32_t nbInputs) {
    Dims const& q = inputs[kQ];
    if (q.nbDims != 4 || inputs[1].nbDims != 4 || inputs[2].nbDims != 4) {
        return "q, k and v must be 4-D NCHW tensors, got q " + dimsToString(q) + ", k " + dimsToString(inputs[1]) +
               " and v " + dimsToString(inputs[2]);
    }
    auto differ = [](int64_t a, int64_t b) { return a >= 0 && b >= 0 && a != b; };
    for (int32_t i : {1, 2}) {
        for (int32_t axis = 0; axis < 4; ++axis) {
            if (differ(q.d[axis], inputs[i].d[axis])) {
                return std::string(i == 1 ? "k " : "v ") + dimsToString(inputs[i]) + " must have the shape of q " +
                       dimsToString(q) + "; project q, k and v to one (N, C, H, W)";
            }
        }
    }
    int64_t const channels = q.d[1];
    if (channels >= 0) {
        if (channels % config.numHeads != 0) {
            return std::to_string(channels) + " channels do not split into num_heads = " +
                   std::to_string(config.numHeads) + " equal heads; the channel count must be a multiple of num_heads";
        }
        int64_t const perHead = channels / config.numHeads;
        if (perHead > EDR_MAX_HEAD_CHANNELS) {
            return "heads of " + std::to_string(perHead) + " channels exceed the kernels' limit of " +
                   std::to_string(EDR_MAX_HEAD_CHANNELS) +
                   "; use more heads or build the portable graph (the .portable.onnx that export writes)";
        }
        for (int32_t k : config.topk) {
            if (k > perHead) {
                return "topk " + std::to_string(k) + " exceeds the " + std::to_string(perHead) +
                       " channels per head; compute topk with topk_from_ratios(C_h, ratios)";
            }
        }
    }
    std::string problem = paramProblem("temperature", inputs[kTemperature], config.numHeads, "one value per head");
    if (problem.empty() && nbInputs > kBranchWeights) {
        problem = paramProblem("branch_weights", inputs[kBranchWeights], config.numBranches(),
                               "one weight per branch of mode '" + modeName(config.mode) + "'");
    }
    return problem;
}

bool checkShapes(AttentionConfig const& config, Dims const* inputs, int32_t nbInputs) noexcept {
    std::string const problem = shapeProblem(config, inputs, nbInputs);
    if (!problem.empty()) {
        logError(problem);
    }
    return problem.empty();
}

// The kernels take int dimensions; describes a dimension beyond that range, or returns "".
std::string intRangeProblem(Dims const& dims) {
    for (int32_t i = 0; i < dims.nbDims; ++i) {
        if (dims.d[i] > std::numeric_limits<int>::max()) {
            return "dimension " + std::to_string(dims.d[i]) + " of q exceeds the kernels' int range";
        }
    }
    return "";
}


// Describes why `count` topk values do not fit `mode`, or returns "".
std::string topkCountProblem(edr_attention_mode mode, size_t count) {
    std::string const prefix = "mode '" + modeName(mode) + "' takes ";
    std::string const got = ", got " + std::to_string(count);
    switch (mode) {
    case EDR_ATTENTION_DENSE:
        return count == 0 ? "" : prefix + "no topk values" + got + "; use mode 'sparse', 'dual' or 'multi' for top-k";
    case EDR_ATTENTION_SPARSE:
    case EDR_ATTENTION_DUAL:
        return count == 1 ? ""
                          : prefix + "exactly 1 topk value" + got + "; use mode 'multi' for several sparse branches";
    case EDR_ATTENTION_MULTI:
        return count >= 1 && count <= EDR_MAX_ATTENTION_BRANCHES
                   ? ""
                   : prefix + "1.." + std::to_string(EDR_MAX_ATTENTION_BRANCHES) +
                         " topk values (one per sparse branch)" + got;
    }
    return "unknown mode " + std::to_string(static_cast<int>(mode));
}

} // namespace

int32_t AttentionConfig::numBranches() const noexcept {
    switch (mode) {
    case EDR_ATTENTION_DUAL: return 2;
    case EDR_ATTENTION_MULTI: return static_cast<int32_t>(topk.size());
    default: return 1;
    }
}

bool AttentionConfig::needsBranchWeights() const noexcept {
    return mode == EDR_ATTENTION_DUAL || mode == EDR_ATTENTION_MULTI;
}

// ---------------------------------------------------------------------------------------------------
// TransposedAttentionPlugin

namespace {

Dims descDims(DynamicPluginTensorDesc const& desc) { return desc.desc.dims; }
Dims descDims(PluginTensorDesc const& desc) { return desc.dims; }
Dims descDims(DimsExprs const& exprs) { return constantDims(exprs); }

//! The input count and shapes of a getOutputShapes / configurePlugin / onShapeChange call (logged when wrong).
template <typename Desc>
bool inputsFit(AttentionConfig const& config, Desc const* in, int32_t nbInputs, int32_t nbOutputs) noexcept {
    if (!checkIoCounts(config, nbInputs, nbOutputs)) {
        return false;
    }
    Dims dims[kNbInputsWithWeights];
    for (int32_t i = 0; i < nbInputs; ++i) {
        dims[i] = descDims(in[i]);
    }
    return checkShapes(config, dims, nbInputs);
}

} // namespace

TransposedAttentionPlugin::TransposedAttentionPlugin(AttentionConfig config)
    : mConfig(std::move(config)), mModeName(modeName(mConfig.mode)) {
    mSerializedFields.emplace_back("num_heads", &mConfig.numHeads, PluginFieldType::kINT32, 1);
    // With the terminating NUL, as the ONNX parser passes strings.
    mSerializedFields.emplace_back("mode", mModeName.c_str(), PluginFieldType::kCHAR,
                                   static_cast<int32_t>(mModeName.size() + 1));
    if (!mConfig.topk.empty()) { // absent for dense, as in the exported ONNX node
        mSerializedFields.emplace_back("topk", mConfig.topk.data(), PluginFieldType::kINT32,
                                       static_cast<int32_t>(mConfig.topk.size()));
    }
    mSerializedFields.emplace_back("eps", &mConfig.eps, PluginFieldType::kFLOAT32, 1);
    mSerializedFieldCollection = {static_cast<int32_t>(mSerializedFields.size()), mSerializedFields.data()};
}

TransposedAttentionPlugin* TransposedAttentionPlugin::copy() const {
    auto* copy = new TransposedAttentionPlugin(mConfig);
    copy->mNbInputs = mNbInputs;
    return copy;
}

int32_t TransposedAttentionPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                                   DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
    if (!inputsFit(mConfig, in, nbInputs, nbOutputs)) {
        return -1;
    }
    mNbInputs = nbInputs;
    return 0;
}

int32_t TransposedAttentionPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                                      DataType const* inputTypes, int32_t nbInputs) const noexcept {
    if (!checkIoCounts(mConfig, nbInputs, nbOutputs)) {
        return -1;
    }
    DataType const data = inputTypes[kQ];
    if (!isFloatType(data) || inputTypes[1] != data || inputTypes[2] != data) {
        logError("q, k and v must all be FP32 or all FP16, got " + typeName(data) + ", " + typeName(inputTypes[1]) +
                 " and " + typeName(inputTypes[2]) + "; cast them to one type in the ONNX");
        return -1;
    }
    DataType const params = inputTypes[kTemperature];
    if (!isFloatType(params) || (nbInputs > kBranchWeights && inputTypes[kBranchWeights] != params)) {
        logError("temperature and branch_weights must both be FP32 or both FP16 (independently of q), got " +
                 typeName(params) + (nbInputs > kBranchWeights ? " and " + typeName(inputTypes[kBranchWeights]) : "") +
                 "; cast them to one type in the ONNX");
        return -1;
    }
    outputTypes[0] = data;
    return 0;
}

int32_t TransposedAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
                                                   DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/,
                                                   DimsExprs* outputs, int32_t nbOutputs,
                                                   nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept {
    if (!inputsFit(mConfig, inputs, nbInputs, nbOutputs)) {
        return -1;
    }
    outputs[0] = inputs[kQ];
    return 0;
}

bool TransposedAttentionPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                                          int32_t nbInputs, int32_t nbOutputs) noexcept {
    if (!ioCountsFit(mConfig, nbInputs, nbOutputs) || pos < 0 || pos >= nbInputs + nbOutputs) {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR) {
        return false;
    }
    if (pos == kQ || pos == kTemperature) {
        return isFloatType(desc.type);
    }
    if (pos == kBranchWeights && pos < nbInputs) {
        return desc.type == inOut[kTemperature].desc.type; // the parameters share one type
    }
    return desc.type == inOut[kQ].desc.type; // k, v and the output follow q's type
}

size_t TransposedAttentionPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                                                   DynamicPluginTensorDesc const* /*outputs*/,
                                                   int32_t /*nbOutputs*/) const noexcept {
    if (nbInputs < 1 || inputs[kQ].max.nbDims != 4) {
        return 0; // configurePlugin has already reported the bad inputs
    }
    Dims const& max = inputs[kQ].max;
    std::string const problem = intRangeProblem(max);
    if (!problem.empty()) {
        logError(problem + " (profile maximum " + dimsToString(max) + "); lower the profile's maximum shape");
        return 0;
    }
    // The size never decreases with N, H or W, so the maximum covers every shape of the profile.
    return edr_transposed_attention_workspace_size(static_cast<int>(max.d[0]), static_cast<int>(max.d[1]),
                                                   static_cast<int>(max.d[2]), static_cast<int>(max.d[3]),
                                                   mConfig.numHeads);
}

int32_t TransposedAttentionPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                                 PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
    if (!inputsFit(mConfig, in, nbInputs, nbOutputs)) {
        return -1;
    }
    mNbInputs = nbInputs;
    return 0;
}

int32_t TransposedAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
                                           void const* const* inputs, void* const* outputs, void* workspace,
                                           cudaStream_t stream) noexcept {
    if (mNbInputs == 0) {
        logError("enqueue called before onShapeChange, so whether branch_weights is connected is unknown");
        return static_cast<int32_t>(cudaErrorInvalidValue);
    }
    Dims const& dims = inputDesc[kQ].dims;
    std::string const problem = intRangeProblem(dims);
    if (!problem.empty()) {
        logError(problem);
        return static_cast<int32_t>(cudaErrorInvalidValue);
    }
    int const n = static_cast<int>(dims.d[0]);
    int const c = static_cast<int>(dims.d[1]);
    int const h = static_cast<int>(dims.d[2]);
    int const w = static_cast<int>(dims.d[3]);
    void const* weights = mNbInputs > kBranchWeights ? inputs[kBranchWeights] : nullptr;
    // What these dims need; TensorRT allocated getWorkspaceSize() for the profile's maximum, at least as much.
    size_t const workspaceSize = edr_transposed_attention_workspace_size(n, c, h, w, mConfig.numHeads);
    int const status = edr_transposed_attention(
        inputs[0], inputs[1], inputs[2], inputs[kTemperature], weights, outputs[0], kernelDtype(inputDesc[kQ].type),
        kernelDtype(inputDesc[kTemperature].type), n, c, h, w, mConfig.numHeads, static_cast<int>(mConfig.mode),
        mConfig.topk.data(), static_cast<int>(mConfig.topk.size()), mConfig.eps, workspace, workspaceSize, stream);
    if (status != 0) {
        logError(std::string("kernel launch failed: ") + edr_error_string(status));
    }
    return status;
}

PluginFieldCollection const* TransposedAttentionPlugin::getFieldsToSerialize() noexcept {
    return &mSerializedFieldCollection;
}

// ---------------------------------------------------------------------------------------------------
// TransposedAttentionPluginCreator

TransposedAttentionPluginCreator::TransposedAttentionPluginCreator()
    // Lengths advertised: one value for the scalars; mode and topk have variable length.
    : mFieldNames{PluginField("num_heads", nullptr, PluginFieldType::kINT32, 1),
                  PluginField("mode", nullptr, PluginFieldType::kCHAR, 0),
                  PluginField("topk", nullptr, PluginFieldType::kINT32, 0),
                  PluginField("eps", nullptr, PluginFieldType::kFLOAT32, 1)},
      mFieldCollection{static_cast<int32_t>(mFieldNames.size()), mFieldNames.data()} {}

PluginFieldCollection const* TransposedAttentionPluginCreator::getFieldNames() noexcept { return &mFieldCollection; }

nvinfer1::IPluginV3* TransposedAttentionPluginCreator::createPlugin(char const* /*name*/,
                                                                    PluginFieldCollection const* fc,
                                                                    nvinfer1::TensorRTPhase /*phase*/) noexcept {
    try {
        AttentionConfig config; // mode dense and eps 1e-12 when those fields are absent
        bool haveHeads = false;
        std::vector<int64_t> ints;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
            PluginField const& field = fc->fields[i];
            std::string const name = field.name != nullptr ? field.name : "";
            if (name == "num_heads") {
                if (!readInts(field, &ints) || ints.size() != 1) {
                    logError("field 'num_heads' must be one INT32 value, got type " +
                             std::to_string(static_cast<int>(field.type)) + " with " + std::to_string(field.length) +
                             " values");
                    return nullptr;
                }
                if (ints[0] < 1 || ints[0] > std::numeric_limits<int32_t>::max()) {
                    logError("num_heads must be an integer >= 1, got " + std::to_string(ints[0]) +
                             "; export the block's head count");
                    return nullptr;
                }
                config.numHeads = static_cast<int32_t>(ints[0]);
                haveHeads = true;
            } else if (name == "mode") {
                std::string const text = field.type == PluginFieldType::kCHAR ? readString(field) : "";
                int32_t mode = 0;
                while (mode < kNbModes && text != kModeNames[mode]) {
                    ++mode;
                }
                if (mode == kNbModes) {
                    logError("field 'mode' must be the string 'dense', 'sparse', 'dual' or 'multi', got '" + text +
                             "' (type " + std::to_string(static_cast<int>(field.type)) + ")");
                    return nullptr;
                }
                config.mode = static_cast<edr_attention_mode>(mode);
            } else if (name == "topk") {
                if (!readInts(field, &ints)) {
                    logError("field 'topk' must be an INT32 array, got type " +
                             std::to_string(static_cast<int>(field.type)));
                    return nullptr;
                }
                config.topk.clear();
                for (int64_t k : ints) {
                    // A row has at most EDR_MAX_HEAD_CHANNELS entries; the exact bound (the channels per head)
                    // is checked once the input shapes are known.
                    if (k < 1 || k > EDR_MAX_HEAD_CHANNELS) {
                        logError("every topk value must be an integer in [1, " + std::to_string(EDR_MAX_HEAD_CHANNELS) +
                                 "] (at most the channels per head), got " + std::to_string(k));
                        return nullptr;
                    }
                    config.topk.push_back(static_cast<int32_t>(k));
                }
            } else if (name == "eps") {
                double eps = 0.0;
                if (!readFloat(field, &eps)) {
                    logError("field 'eps' must be one FLOAT32 value, got type " +
                             std::to_string(static_cast<int>(field.type)) + " with " + std::to_string(field.length) +
                             " values");
                    return nullptr;
                }
                // The kernels take eps as a float, and so does the serialized field: one value everywhere.
                config.eps = static_cast<float>(eps);
                if (!(config.eps > 0.0f) || !std::isfinite(config.eps)) {
                    char text[32];
                    std::snprintf(text, sizeof(text), "%g", eps);
                    logError(std::string("eps must be a positive finite float, got ") + text +
                             "; the default is 1e-12");
                    return nullptr;
                }
            } else if (name != "plugin_version" && name != "plugin_namespace") {
                // plugin_version/plugin_namespace select the creator in the ONNX parser, which may pass them on.
                log(ILogger::Severity::kWARNING, "ignoring unknown field '" + name + "'");
            }
        }
        if (!haveHeads) {
            logError("field 'num_heads' is missing; the TransposedAttention node needs the block's head count");
            return nullptr;
        }
        std::string const problem = topkCountProblem(config.mode, config.topk.size());
        if (!problem.empty()) {
            logError(problem);
            return nullptr;
        }
        return new TransposedAttentionPlugin(std::move(config));
    } catch (std::exception const& e) {
        logError(std::string("createPlugin failed: ") + e.what());
    }
    return nullptr;
}

} // namespace edge_derain
