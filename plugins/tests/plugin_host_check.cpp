// Host-only check of libedge_derain_plugins.so: drives the plugins through the entry points and
// interfaces TensorRT uses (getCreators, createPlugin, the V3 capability interfaces, serialization
// fields, shape inference, format support, logging), with no GPU and no TensorRT runtime library.
// IExprBuilder is stood in for by a small constant-folding builder. Exit status 0 when every check
// passes; tests/test_plugins_build.py builds and runs it.
#include "NvInferRuntime.h"
#include "NvInferVersion.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

using namespace nvinfer1;

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" IPluginCreatorInterface* const* getPluginCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(ILoggerFinder* finder);
// From include/edge_derain/kernels.h (exported by the plugin library, which links the kernels in).
extern "C" size_t edr_transposed_attention_workspace_size(int n, int c, int h, int w, int num_heads);

namespace {

int gChecks = 0;
int gFailures = 0;

#define CHECK(cond)                                                                                                   \
    do {                                                                                                              \
        ++gChecks;                                                                                                    \
        if (!(cond)) {                                                                                                \
            ++gFailures;                                                                                              \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                             \
        }                                                                                                             \
    } while (0)

// A dimension expression: value >= 0 is a build-time constant, -1 a runtime-only dimension.
class DimImpl : public apiv::VDimensionExpr {
public:
    explicit DimImpl(int64_t value) : mValue(value) {}
    bool isConstant() const override { return mValue >= 0; }
    int64_t getConstantValue() const override { return mValue; }
    bool isSizeTensor() const override { return false; }

private:
    int64_t mValue;
};

class Dim : public IDimensionExpr {
public:
    explicit Dim(int64_t value) : mDimImpl(value) { mImpl = &mDimImpl; }

private:
    DimImpl mDimImpl;
};

class BuilderImpl : public apiv::VExprBuilder {
public:
    IDimensionExpr const* constant(int64_t value) override { return make(value); }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& first,
                                    IDimensionExpr const& second) override {
        if (op != DimensionOperation::kPROD || !first.isConstant() || !second.isConstant()) {
            return make(-1);
        }
        return make(first.getConstantValue() * second.getConstantValue());
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override {
        return nullptr;
    }
    IDimensionExpr const* make(int64_t value) {
        mDims.push_back(std::make_unique<Dim>(value));
        return mDims.back().get();
    }

private:
    std::deque<std::unique_ptr<Dim>> mDims;
};

class Builder : public IExprBuilder {
public:
    Builder() { mImpl = &mBuilderImpl; }
    IDimensionExpr const* dim(int64_t value) { return mBuilderImpl.make(value); }

private:
    BuilderImpl mBuilderImpl;
};

class CapturingLogger : public ILogger {
public:
    void log(Severity severity, char const* msg) noexcept override {
        if (severity <= Severity::kWARNING) {
            messages.emplace_back(msg);
        }
    }
    bool saw(char const* fragment) const {
        for (auto const& m : messages) {
            if (m.find(fragment) != std::string::npos) {
                return true;
            }
        }
        return false;
    }
    std::vector<std::string> messages;
};

class LoggerFinder : public ILoggerFinder {
public:
    ILogger* findLogger() override { return &logger; }
    CapturingLogger logger;
};

Dims dims4(int64_t n, int64_t c, int64_t h, int64_t w) {
    Dims d{};
    d.nbDims = 4;
    d.d[0] = n;
    d.d[1] = c;
    d.d[2] = h;
    d.d[3] = w;
    return d;
}

DynamicPluginTensorDesc tensorDesc(Dims dims, DataType type, TensorFormat format = TensorFormat::kLINEAR) {
    DynamicPluginTensorDesc desc{};
    desc.desc.dims = dims;
    desc.desc.type = type;
    desc.desc.format = format;
    desc.min = dims;
    desc.max = dims;
    desc.opt = dims;
    return desc;
}

std::vector<int32_t> serializedDilations(IPluginV3* plugin) {
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* fc = runtime->getFieldsToSerialize();
    if (fc == nullptr || fc->nbFields != 1 || std::strcmp(fc->fields[0].name, "dilations") != 0 ||
        fc->fields[0].type != PluginFieldType::kINT32) {
        return {};
    }
    auto const* data = static_cast<int32_t const*>(fc->fields[0].data);
    return std::vector<int32_t>(data, data + fc->fields[0].length);
}

IPluginV3* create(IPluginCreatorV3One* creator, std::vector<PluginField> const& fields,
                  TensorRTPhase phase = TensorRTPhase::kBUILD) {
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
    return creator->createPlugin("dilation_filter_0", &fc, phase);
}

void checkCreator(IPluginCreatorV3One* creator, CapturingLogger& logger) {
    CHECK(std::strcmp(creator->getPluginName(), "DilationFilter") == 0);
    CHECK(std::strcmp(creator->getPluginVersion(), "1") == 0);
    CHECK(std::strcmp(creator->getPluginNamespace(), "") == 0);
    PluginFieldCollection const* names = creator->getFieldNames();
    CHECK(names != nullptr && names->nbFields == 1 && std::strcmp(names->fields[0].name, "dilations") == 0);

    std::unique_ptr<IPluginV3> defaults(create(creator, {}));
    CHECK(defaults && serializedDilations(defaults.get()) == (std::vector<int32_t>{1, 2, 3, 4}));

    // Round trip through the serialized fields, as engine deserialization does.
    int32_t const two[] = {1, 3};
    std::unique_ptr<IPluginV3> built(create(creator, {PluginField("dilations", two, PluginFieldType::kINT32, 2)}));
    CHECK(built && serializedDilations(built.get()) == (std::vector<int32_t>{1, 3}));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(built->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    std::unique_ptr<IPluginV3> restored(creator->createPlugin("restored", saved, TensorRTPhase::kRUNTIME));
    CHECK(restored && serializedDilations(restored.get()) == (std::vector<int32_t>{1, 3}));

    int64_t const wide[] = {2, 4, 6};
    char const zeros[] = "zeros";
    int32_t const three = 3;
    std::unique_ptr<IPluginV3> fromOnnx(create(creator, {PluginField("dilations", wide, PluginFieldType::kINT64, 3),
                                                         PluginField("kernel_size", &three, PluginFieldType::kINT32, 1),
                                                         PluginField("padding", zeros, PluginFieldType::kCHAR, 6)}));
    CHECK(fromOnnx && serializedDilations(fromOnnx.get()) == (std::vector<int32_t>{2, 4, 6}));

    int32_t const zero = 0;
    logger.messages.clear();
    CHECK(create(creator, {PluginField("dilations", &zero, PluginFieldType::kINT32, 1)}) == nullptr);
    CHECK(logger.saw("dilation must be an integer >= 1"));
    int32_t const nine[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    CHECK(create(creator, {PluginField("dilations", nine, PluginFieldType::kINT32, 9)}) == nullptr);
    float const asFloat[] = {1.f, 2.f};
    CHECK(create(creator, {PluginField("dilations", asFloat, PluginFieldType::kFLOAT32, 2)}) == nullptr);
    int32_t const five = 5;
    CHECK(create(creator, {PluginField("kernel_size", &five, PluginFieldType::kINT32, 1)}) == nullptr);
    char const reflect[] = "reflect";
    CHECK(create(creator, {PluginField("padding", reflect, PluginFieldType::kCHAR, 7)}) == nullptr);
    CHECK(logger.saw("padding = 'zeros'"));
}

// The plugin's three V3 capability interfaces, after checking their kinds, its name and its one output.
struct Interfaces {
    IPluginV3OneCore* core;
    IPluginV3OneBuild* build;
    IPluginV3OneRuntime* runtime;
};

Interfaces checkInterfaces(IPluginV3* plugin, char const* name) {
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(std::strcmp(core->getPluginName(), name) == 0);
    CHECK(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0);
    CHECK(std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0);
    CHECK(std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0);
    CHECK(build->getNbOutputs() == 1);
    return {core, build, runtime};
}

void checkPlugin(IPluginCreatorV3One* creator, CapturingLogger& logger) {
    std::unique_ptr<IPluginV3> plugin(create(creator, {}));
    CHECK(plugin != nullptr);
    if (!plugin) {
        return;
    }
    auto [core, build, runtime] = checkInterfaces(plugin.get(), "DilationFilter");

    DataType const halfIn[] = {DataType::kHALF, DataType::kHALF};
    DataType outType = DataType::kFLOAT;
    CHECK(build->getOutputDataTypes(&outType, 1, halfIn, 2) == 0 && outType == DataType::kHALF);

    // Formats: LINEAR only, FLOAT or HALF, every tensor of the image's type.
    Dims const image = dims4(1, 3, 8, 8);
    Dims const kernels = dims4(1, 27, 8, 8);
    Dims const output = dims4(1, 12, 8, 8);
    for (DataType type : {DataType::kFLOAT, DataType::kHALF}) {
        DynamicPluginTensorDesc io[] = {tensorDesc(image, type), tensorDesc(kernels, type), tensorDesc(output, type)};
        for (int32_t pos = 0; pos < 3; ++pos) {
            CHECK(build->supportsFormatCombination(pos, io, 2, 1));
        }
    }
    {
        DynamicPluginTensorDesc io[] = {tensorDesc(image, DataType::kFLOAT), tensorDesc(kernels, DataType::kHALF),
                                        tensorDesc(output, DataType::kFLOAT)};
        CHECK(!build->supportsFormatCombination(1, io, 2, 1));
        io[0] = tensorDesc(image, DataType::kINT8);
        CHECK(!build->supportsFormatCombination(0, io, 2, 1));
        io[0] = tensorDesc(image, DataType::kFLOAT, TensorFormat::kCHW32);
        CHECK(!build->supportsFormatCombination(0, io, 2, 1));
    }

    // Shape inference: (N, C, H, W) -> (N, C*D, H, W), with a runtime-only H.
    Builder exprs;
    DimsExprs in[2];
    in[0].nbDims = 4;
    in[1].nbDims = 4;
    in[0].d[0] = exprs.dim(2);
    in[0].d[1] = exprs.dim(3);
    in[0].d[2] = exprs.dim(-1);
    in[0].d[3] = exprs.dim(17);
    in[1].d[0] = exprs.dim(2);
    in[1].d[1] = exprs.dim(27);
    in[1].d[2] = exprs.dim(-1);
    in[1].d[3] = exprs.dim(17);
    DimsExprs out[1];
    CHECK(build->getOutputShapes(in, 2, nullptr, 0, out, 1, exprs) == 0);
    CHECK(out[0].nbDims == 4 && out[0].d[0]->getConstantValue() == 2 && out[0].d[1]->getConstantValue() == 12 &&
          !out[0].d[2]->isConstant() && out[0].d[3]->getConstantValue() == 17);
    in[1].d[1] = exprs.dim(12);
    logger.messages.clear();
    CHECK(build->getOutputShapes(in, 2, nullptr, 0, out, 1, exprs) != 0);
    CHECK(logger.saw("kernels must have 27 channels for a 3-channel image, got 12"));

    // configurePlugin / onShapeChange reject inconsistent batch, height or width.
    DynamicPluginTensorDesc good[] = {tensorDesc(image, DataType::kFLOAT), tensorDesc(kernels, DataType::kFLOAT)};
    DynamicPluginTensorDesc outDesc[] = {tensorDesc(output, DataType::kFLOAT)};
    CHECK(build->configurePlugin(good, 2, outDesc, 1) == 0);
    DynamicPluginTensorDesc bad[] = {tensorDesc(image, DataType::kFLOAT),
                                     tensorDesc(dims4(1, 27, 8, 9), DataType::kFLOAT)};
    CHECK(build->configurePlugin(bad, 2, outDesc, 1) != 0);
    PluginTensorDesc runtimeIn[] = {good[0].desc, good[1].desc};
    PluginTensorDesc runtimeBad[] = {bad[0].desc, bad[1].desc};
    CHECK(runtime->onShapeChange(runtimeIn, 2, &outDesc[0].desc, 1) == 0);
    CHECK(runtime->onShapeChange(runtimeBad, 2, &outDesc[0].desc, 1) != 0);

    // enqueue reaches the C API, whose argument checks run before any CUDA call: null buffers give
    // cudaErrorInvalidValue (1) on this GPU-less host instead of a crash.
    void const* inputs[] = {nullptr, nullptr};
    void* outputs[] = {nullptr};
    CHECK(runtime->enqueue(runtimeIn, &outDesc[0].desc, inputs, outputs, nullptr, nullptr) == 1);

    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    CHECK(cloned && serializedDilations(cloned.get()) == serializedDilations(plugin.get()));
    std::unique_ptr<IPluginV3> attached(runtime->attachToContext(nullptr));
    CHECK(attached && serializedDilations(attached.get()) == serializedDilations(plugin.get()));
}

// ---- TransposedAttention -------------------------------------------------------------------------

// The serialized fields of a TransposedAttention plugin, read back; `ok` is false if any is malformed.
struct AttentionFields {
    bool ok = false;
    int32_t numHeads = 0;
    std::string mode;
    std::vector<int32_t> topk;
    float eps = 0.f;

    bool operator==(AttentionFields const& other) const {
        return ok && other.ok && numHeads == other.numHeads && mode == other.mode && topk == other.topk &&
               eps == other.eps;
    }
};

AttentionFields serializedAttention(IPluginV3* plugin) {
    AttentionFields fields;
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* fc = runtime->getFieldsToSerialize();
    if (fc == nullptr) {
        return fields;
    }
    int found = 0;
    for (int32_t i = 0; i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        std::string const name = f.name;
        if (name == "num_heads" && f.type == PluginFieldType::kINT32 && f.length == 1) {
            fields.numHeads = *static_cast<int32_t const*>(f.data);
            ++found;
        } else if (name == "mode" && f.type == PluginFieldType::kCHAR) {
            fields.mode = std::string(static_cast<char const*>(f.data), static_cast<size_t>(f.length)).c_str();
            ++found;
        } else if (name == "topk" && f.type == PluginFieldType::kINT32) {
            auto const* data = static_cast<int32_t const*>(f.data);
            fields.topk.assign(data, data + f.length);
        } else if (name == "eps" && f.type == PluginFieldType::kFLOAT32 && f.length == 1) {
            fields.eps = *static_cast<float const*>(f.data);
            ++found;
        } else {
            return fields; // unexpected field, type or length
        }
    }
    fields.ok = found == 3;
    return fields;
}

AttentionFields attentionFields(int32_t numHeads, char const* mode, std::vector<int32_t> topk, float eps) {
    AttentionFields fields;
    fields.ok = true;
    fields.numHeads = numHeads;
    fields.mode = mode;
    fields.topk = std::move(topk);
    fields.eps = eps;
    return fields;
}

IPluginV3* createAttention(IPluginCreatorV3One* creator, std::vector<PluginField> const& fields,
                           TensorRTPhase phase = TensorRTPhase::kBUILD) {
    PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
    return creator->createPlugin("transposed_attention_0", &fc, phase);
}

// A CHAR field as TensorRT's ONNX parser passes it: the string with its terminating NUL counted.
PluginField modeField(char const* mode) {
    return PluginField("mode", mode, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(mode) + 1));
}

void checkAttentionCreator(IPluginCreatorV3One* creator, CapturingLogger& logger) {
    CHECK(std::strcmp(creator->getPluginName(), "TransposedAttention") == 0);
    CHECK(std::strcmp(creator->getPluginVersion(), "1") == 0);
    CHECK(std::strcmp(creator->getPluginNamespace(), "") == 0);
    // The ONNX parser passes on only the attributes named here, so all four must be listed.
    PluginFieldCollection const* names = creator->getFieldNames();
    CHECK(names != nullptr && names->nbFields == 4);
    if (names != nullptr && names->nbFields == 4) {
        char const* expected[] = {"num_heads", "mode", "topk", "eps"};
        PluginFieldType const types[] = {PluginFieldType::kINT32, PluginFieldType::kCHAR, PluginFieldType::kINT32,
                                         PluginFieldType::kFLOAT32};
        for (int32_t i = 0; i < 4; ++i) {
            CHECK(std::strcmp(names->fields[i].name, expected[i]) == 0 && names->fields[i].type == types[i]);
        }
    }

    int32_t const two = 2;
    // Only num_heads given: mode dense, eps 1e-12, no topk field.
    std::unique_ptr<IPluginV3> defaults(
        createAttention(creator, {PluginField("num_heads", &two, PluginFieldType::kINT32, 1)}));
    CHECK(defaults && serializedAttention(defaults.get()) == attentionFields(2, "dense", {}, 1e-12f));

    // Dual with the fields as the ONNX parser produces them, then the round trip through the serialized
    // fields that engine deserialization does.
    int32_t const five = 5;
    float const eps = 1e-6f;
    std::unique_ptr<IPluginV3> dual(
        createAttention(creator, {PluginField("num_heads", &two, PluginFieldType::kINT32, 1), modeField("dual"),
                                  PluginField("topk", &five, PluginFieldType::kINT32, 1),
                                  PluginField("eps", &eps, PluginFieldType::kFLOAT32, 1)}));
    CHECK(dual && serializedAttention(dual.get()) == attentionFields(2, "dual", {5}, 1e-6f));
    if (dual) {
        auto* runtime = static_cast<IPluginV3OneRuntime*>(dual->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        std::unique_ptr<IPluginV3> restored(
            creator->createPlugin("restored", runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME));
        CHECK(restored && serializedAttention(restored.get()) == serializedAttention(dual.get()));
    }

    // Multi from the Python API's types: INT64 topk, a string without NUL, a FLOAT64 eps; in any order.
    int64_t const wide[] = {2, 3, 4};
    int64_t const heads64 = 1;
    char const multi[] = {'m', 'u', 'l', 't', 'i'};
    double const eps64 = 1e-8;
    std::unique_ptr<IPluginV3> fromPython(
        createAttention(creator, {PluginField("topk", wide, PluginFieldType::kINT64, 3),
                                  PluginField("mode", multi, PluginFieldType::kCHAR, 5),
                                  PluginField("eps", &eps64, PluginFieldType::kFLOAT64, 1),
                                  PluginField("num_heads", &heads64, PluginFieldType::kINT64, 1)}));
    CHECK(fromPython && serializedAttention(fromPython.get()) == attentionFields(1, "multi", {2, 3, 4}, 1e-8f));

    // Rejected, each with its own one-line reason.
    struct Rejected {
        std::vector<PluginField> fields;
        char const* reason;
    };
    int32_t const zero = 0;
    int32_t const tooMany[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    int32_t const pair[] = {3, 4};
    int32_t const tooLarge = 97;
    float const zeroEps = 0.f;
    float const headsAsFloat = 2.f;
    PluginField const heads("num_heads", &two, PluginFieldType::kINT32, 1);
    std::vector<Rejected> const rejected = {
        {{modeField("dense")}, "field 'num_heads' is missing"},
        {{PluginField("num_heads", &zero, PluginFieldType::kINT32, 1)}, "num_heads must be an integer >= 1, got 0"},
        {{PluginField("num_heads", &headsAsFloat, PluginFieldType::kFLOAT32, 1)},
         "field 'num_heads' must be one INT32 value"},
        {{heads, modeField("topk")},
         "field 'mode' must be the string 'dense', 'sparse', 'dual' or 'multi', got 'topk'"},
        {{heads, modeField("dual"), PluginField("topk", pair, PluginFieldType::kINT32, 2)},
         "mode 'dual' takes exactly 1 topk value, got 2"},
        {{heads, modeField("sparse")}, "mode 'sparse' takes exactly 1 topk value, got 0"},
        {{heads, PluginField("topk", &five, PluginFieldType::kINT32, 1)}, "mode 'dense' takes no topk values, got 1"},
        {{heads, modeField("multi"), PluginField("topk", tooMany, PluginFieldType::kINT32, 9)},
         "mode 'multi' takes 1..8 topk values (one per sparse branch), got 9"},
        {{heads, modeField("sparse"), PluginField("topk", &zero, PluginFieldType::kINT32, 1)},
         "every topk value must be an integer in [1, 96]"},
        {{heads, modeField("sparse"), PluginField("topk", &tooLarge, PluginFieldType::kINT32, 1)},
         "(at most the channels per head), got 97"},
        {{heads, PluginField("eps", &zeroEps, PluginFieldType::kFLOAT32, 1)},
         "eps must be a positive finite float, got 0"},
        {{heads, PluginField("eps", &two, PluginFieldType::kINT32, 1)}, "field 'eps' must be one FLOAT32 value"},
    };
    for (Rejected const& r : rejected) {
        logger.messages.clear();
        CHECK(createAttention(creator, r.fields) == nullptr);
        CHECK(logger.saw(r.reason));
        if (!logger.saw(r.reason)) {
            std::fprintf(stderr, "  expected a log line containing: %s\n", r.reason);
        }
    }

    // Unknown fields are ignored with a warning, like DilationFilter's.
    logger.messages.clear();
    std::unique_ptr<IPluginV3> extra(
        createAttention(creator, {heads, PluginField("mask_semantics", "x", PluginFieldType::kCHAR, 2)}));
    CHECK(extra != nullptr && logger.saw("ignoring unknown field 'mask_semantics'"));
}

struct AttentionIo {
    std::vector<Dims> inputs;
    Dims output;
};

// q, k, v (n, c, h, w), temperature (heads,), and branch weights (branches,) when branches > 0.
AttentionIo attentionIo(int64_t n, int64_t c, int64_t h, int64_t w, int64_t heads, int64_t branches) {
    Dims const data = dims4(n, c, h, w);
    Dims temperature{};
    temperature.nbDims = 1;
    temperature.d[0] = heads;
    AttentionIo io{{data, data, data, temperature}, data};
    if (branches > 0) {
        Dims weights{};
        weights.nbDims = 1;
        weights.d[0] = branches;
        io.inputs.push_back(weights);
    }
    return io;
}

std::vector<DynamicPluginTensorDesc> attentionDescs(AttentionIo const& io, DataType data, DataType params) {
    std::vector<DynamicPluginTensorDesc> descs;
    for (size_t i = 0; i < io.inputs.size(); ++i) {
        descs.push_back(tensorDesc(io.inputs[i], i < 3 ? data : params));
    }
    descs.push_back(tensorDesc(io.output, data));
    return descs;
}

DimsExprs constantExprs(Builder& exprs, Dims const& dims) {
    DimsExprs out{};
    out.nbDims = dims.nbDims;
    for (int32_t i = 0; i < dims.nbDims; ++i) {
        out.d[i] = exprs.dim(dims.d[i]);
    }
    return out;
}

// getOutputShapes on `io` with build-time constants (-1 = runtime-only); returns its status.
int32_t attentionShapes(IPluginV3OneBuild* build, AttentionIo const& io, Builder& exprs, DimsExprs* out) {
    std::vector<DimsExprs> in;
    for (Dims const& dims : io.inputs) {
        in.push_back(constantExprs(exprs, dims));
    }
    return build->getOutputShapes(in.data(), static_cast<int32_t>(in.size()), nullptr, 0, out, 1, exprs);
}

void checkAttentionPlugin(IPluginCreatorV3One* creator, CapturingLogger& logger) {
    int32_t const two = 2;
    int32_t const three = 3;
    std::unique_ptr<IPluginV3> plugin(
        createAttention(creator, {PluginField("num_heads", &two, PluginFieldType::kINT32, 1), modeField("dual"),
                                  PluginField("topk", &three, PluginFieldType::kINT32, 1)}));
    CHECK(plugin != nullptr);
    if (!plugin) {
        return;
    }
    auto [core, build, runtime] = checkInterfaces(plugin.get(), "TransposedAttention");

    // Output type = q's; the parameters may differ from q but not from each other.
    DataType outType = DataType::kFLOAT;
    DataType const halfData[] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT};
    CHECK(build->getOutputDataTypes(&outType, 1, halfData, 5) == 0 && outType == DataType::kHALF);
    DataType const mixedData[] = {DataType::kFLOAT, DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT,
                                  DataType::kFLOAT};
    logger.messages.clear();
    CHECK(build->getOutputDataTypes(&outType, 1, mixedData, 5) != 0);
    CHECK(logger.saw("q, k and v must all be FP32 or all FP16, got FP32, FP16 and FP32"));
    DataType const mixedParams[] = {DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT,
                                    DataType::kHALF};
    CHECK(build->getOutputDataTypes(&outType, 1, mixedParams, 5) != 0);
    CHECK(logger.saw("temperature and branch_weights must both be FP32 or both FP16"));
    // Dual needs its branch weights.
    logger.messages.clear();
    CHECK(build->getOutputDataTypes(&outType, 1, halfData, 4) != 0);
    CHECK(logger.saw("mode 'dual' takes 5 inputs (q, k, v, temperature, branch_weights)"));

    // Formats: LINEAR only; q, k, v, output one of FLOAT/HALF; parameters one of FLOAT/HALF, independently.
    AttentionIo const io = attentionIo(1, 16, 8, 8, 2, 2);
    for (DataType data : {DataType::kFLOAT, DataType::kHALF}) {
        for (DataType params : {DataType::kFLOAT, DataType::kHALF}) {
            std::vector<DynamicPluginTensorDesc> descs = attentionDescs(io, data, params);
            for (int32_t pos = 0; pos < 6; ++pos) {
                CHECK(build->supportsFormatCombination(pos, descs.data(), 5, 1));
            }
        }
    }
    {
        std::vector<DynamicPluginTensorDesc> descs = attentionDescs(io, DataType::kFLOAT, DataType::kFLOAT);
        descs[1].desc.type = DataType::kHALF;
        CHECK(!build->supportsFormatCombination(1, descs.data(), 5, 1)); // k differs from q
        descs = attentionDescs(io, DataType::kFLOAT, DataType::kFLOAT);
        descs[4].desc.type = DataType::kHALF;
        CHECK(!build->supportsFormatCombination(4, descs.data(), 5, 1)); // branch weights differ from temperature
        descs = attentionDescs(io, DataType::kFLOAT, DataType::kFLOAT);
        descs[5].desc.type = DataType::kHALF;
        CHECK(!build->supportsFormatCombination(5, descs.data(), 5, 1)); // output differs from q
        descs = attentionDescs(io, DataType::kINT8, DataType::kFLOAT);
        CHECK(!build->supportsFormatCombination(0, descs.data(), 5, 1));
        descs = attentionDescs(io, DataType::kFLOAT, DataType::kINT32);
        CHECK(!build->supportsFormatCombination(3, descs.data(), 5, 1));
        descs = attentionDescs(io, DataType::kFLOAT, DataType::kFLOAT);
        descs[0].desc.format = TensorFormat::kCHW32;
        CHECK(!build->supportsFormatCombination(0, descs.data(), 5, 1));
        CHECK(!build->supportsFormatCombination(0, descs.data(), 4, 1)); // dual without weights
    }

    // Shape inference: the output is q's shape, runtime-only dims included.
    Builder exprs;
    DimsExprs out[1];
    CHECK(attentionShapes(build, attentionIo(2, 16, -1, 17, 2, 2), exprs, out) == 0);
    CHECK(out[0].nbDims == 4 && out[0].d[0]->getConstantValue() == 2 && out[0].d[1]->getConstantValue() == 16 &&
          !out[0].d[2]->isConstant() && out[0].d[3]->getConstantValue() == 17);
    struct BadShapes {
        AttentionIo io;
        char const* reason;
    };
    AttentionIo kWider = attentionIo(2, 16, -1, 17, 2, 2);
    kWider.inputs[1].d[3] = 18;
    std::vector<BadShapes> const bad = {
        {attentionIo(2, 15, -1, 17, 2, 2), "15 channels do not split into num_heads = 2 equal heads"},
        {attentionIo(2, 4, -1, 17, 2, 2), "topk 3 exceeds the 2 channels per head"},
        {attentionIo(2, 194, -1, 17, 2, 2), "heads of 97 channels exceed the kernels' limit of 96"},
        {attentionIo(2, 16, -1, 17, 3, 2), "temperature must have shape (2,), one value per head, got (3,)"},
        {attentionIo(2, 16, -1, 17, 2, 4), "branch_weights must have shape (2,), one weight per branch of mode 'dual'"},
        {kWider, "k (2, 16, -1, 18) must have the shape of q (2, 16, -1, 17)"},
    };
    for (BadShapes const& b : bad) {
        logger.messages.clear();
        CHECK(attentionShapes(build, b.io, exprs, out) != 0);
        CHECK(logger.saw(b.reason));
        if (!logger.saw(b.reason)) {
            std::fprintf(stderr, "  expected a log line containing: %s\n", b.reason);
        }
    }

    // configurePlugin / onShapeChange apply the same checks; the workspace follows the profile's maximum.
    std::vector<DynamicPluginTensorDesc> good = attentionDescs(io, DataType::kFLOAT, DataType::kFLOAT);
    CHECK(build->configurePlugin(good.data(), 5, &good[5], 1) == 0);
    std::vector<DynamicPluginTensorDesc> badDescs = attentionDescs(attentionIo(1, 16, 8, 8, 2, 3), DataType::kFLOAT,
                                                                   DataType::kFLOAT);
    CHECK(build->configurePlugin(badDescs.data(), 5, &badDescs[5], 1) != 0);
    good[0].max = dims4(2, 16, 64, 48);
    size_t const workspace = build->getWorkspaceSize(good.data(), 5, &good[5], 1);
    CHECK(workspace > 0 && workspace == edr_transposed_attention_workspace_size(2, 16, 64, 48, 2));
    CHECK(workspace >= edr_transposed_attention_workspace_size(1, 16, 8, 8, 2));

    // A fresh runtime plugin cannot enqueue before onShapeChange has told it the inputs.
    std::unique_ptr<IPluginV3> fresh(
        createAttention(creator, {PluginField("num_heads", &two, PluginFieldType::kINT32, 1)}));
    PluginTensorDesc runtimeIn[5];
    for (int32_t i = 0; i < 5; ++i) {
        runtimeIn[i] = good[i].desc;
    }
    void const* inputs[] = {nullptr, nullptr, nullptr, nullptr, nullptr};
    void* outputs[] = {nullptr};
    if (fresh) {
        auto* freshRuntime =
            static_cast<IPluginV3OneRuntime*>(fresh->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        logger.messages.clear();
        CHECK(freshRuntime->enqueue(runtimeIn, &good[5].desc, inputs, outputs, nullptr, nullptr) == 1);
        CHECK(logger.saw("enqueue called before onShapeChange"));
        // Dense takes 4 or 5 inputs.
        CHECK(freshRuntime->onShapeChange(runtimeIn, 4, &good[5].desc, 1) == 0);
        CHECK(freshRuntime->onShapeChange(runtimeIn, 5, &good[5].desc, 1) != 0); // 2 weights, dense has 1 branch
    }
    PluginTensorDesc runtimeBad[5];
    for (int32_t i = 0; i < 5; ++i) {
        runtimeBad[i] = badDescs[i].desc;
    }
    CHECK(runtime->onShapeChange(runtimeBad, 5, &good[5].desc, 1) != 0);
    CHECK(runtime->onShapeChange(runtimeIn, 5, &good[5].desc, 1) == 0);

    // enqueue reaches the C API, whose argument checks run before any CUDA call: null buffers give
    // cudaErrorInvalidValue (1) on this GPU-less host instead of a crash.
    logger.messages.clear();
    CHECK(runtime->enqueue(runtimeIn, &good[5].desc, inputs, outputs, nullptr, nullptr) == 1);
    CHECK(logger.saw("kernel launch failed: invalid argument"));

    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    CHECK(cloned && serializedAttention(cloned.get()) == serializedAttention(plugin.get()));
    std::unique_ptr<IPluginV3> attached(runtime->attachToContext(nullptr));
    CHECK(attached && serializedAttention(attached.get()) == attentionFields(2, "dual", {3}, 1e-12f));
}

IPluginCreatorV3One* findCreator(IPluginCreatorInterface* const* creators, int32_t nb, char const* name) {
    for (int32_t i = 0; i < nb; ++i) {
        if (creators[i] != nullptr && std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0) {
            auto* creator = static_cast<IPluginCreatorV3One*>(creators[i]);
            if (std::strcmp(creator->getPluginName(), name) == 0) {
                return creator;
            }
        }
    }
    return nullptr;
}

} // namespace

int main() {
    LoggerFinder finder;
    setLoggerFinder(&finder);

    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    int32_t nbLegacy = 0;
    IPluginCreatorInterface* const* legacy = getPluginCreators(nbLegacy);
    CHECK(nb == 2 && creators != nullptr);
    CHECK(nbLegacy == nb && legacy == creators);
    IPluginCreatorV3One* dilationFilter = creators != nullptr ? findCreator(creators, nb, "DilationFilter") : nullptr;
    IPluginCreatorV3One* attention = creators != nullptr ? findCreator(creators, nb, "TransposedAttention") : nullptr;
    CHECK(dilationFilter != nullptr);
    CHECK(attention != nullptr);
    if (dilationFilter != nullptr) {
        checkCreator(dilationFilter, finder.logger);
        checkPlugin(dilationFilter, finder.logger);
    }
    if (attention != nullptr) {
        checkAttentionCreator(attention, finder.logger);
        checkAttentionPlugin(attention, finder.logger);
    }
    // Which header set this build used: CI compiles against TensorRT 10.3 (JetPack 6) and 11.x.
    std::printf("TensorRT headers %d.%d.%d\n", NV_TENSORRT_MAJOR, NV_TENSORRT_MINOR, NV_TENSORRT_PATCH);
    std::printf("plugin host check: %d of %d checks passed\n", gChecks - gFailures, gChecks);
    return gFailures == 0 ? 0 : 1;
}
