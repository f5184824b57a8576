// Host-only check of libedge_derain_plugins.so: drives the plugin through the entry points and
// interfaces TensorRT uses (getCreators, createPlugin, the V3 capability interfaces, serialization
// fields, shape inference, format support, logging), with no GPU and no TensorRT runtime library.
// IExprBuilder is stood in for by a small constant-folding builder. Exit status 0 when every check
// passes; tests/test_plugins_build.py builds and runs it.
#include "NvInferRuntime.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
extern "C" IPluginCreatorInterface* const* getPluginCreators(int32_t& nbCreators);
extern "C" void setLoggerFinder(ILoggerFinder* finder);

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

void checkPlugin(IPluginCreatorV3One* creator, CapturingLogger& logger) {
    std::unique_ptr<IPluginV3> plugin(create(creator, {}));
    CHECK(plugin != nullptr);
    if (!plugin) {
        return;
    }
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(std::strcmp(core->getPluginName(), "DilationFilter") == 0);
    CHECK(std::strcmp(core->getInterfaceInfo().kind, "PLUGIN_V3ONE_CORE") == 0);
    CHECK(std::strcmp(build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0);
    CHECK(std::strcmp(runtime->getInterfaceInfo().kind, "PLUGIN_V3ONE_RUNTIME") == 0);
    CHECK(build->getNbOutputs() == 1);

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

} // namespace

int main() {
    LoggerFinder finder;
    setLoggerFinder(&finder);

    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    int32_t nbLegacy = 0;
    IPluginCreatorInterface* const* legacy = getPluginCreators(nbLegacy);
    CHECK(nb == 1 && creators != nullptr && creators[0] != nullptr);
    CHECK(nbLegacy == nb && legacy[0] == creators[0]);
    if (nb == 1 && creators != nullptr) {
        CHECK(std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0);
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
        checkCreator(creator, finder.logger);
        checkPlugin(creator, finder.logger);
    }
    std::printf("plugin host check: %d of %d checks passed\n", gChecks - gFailures, gChecks);
    return gFailures == 0 ? 0 : 1;
}
