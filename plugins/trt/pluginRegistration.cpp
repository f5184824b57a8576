// Entry points TensorRT looks up in a plugin shared library loaded with
// IPluginRegistry::loadLibrary(), `trtexec --dynamicPlugins=` or `--setPluginsToSerialize` (TensorRT 10+
// and TensorRT-RTX): getCreators() lists the V3 creators, setLoggerFinder() hands over the logger.
// getPluginCreators() is the older name of getCreators(), still looked up by some TensorRT versions.
//
// No static REGISTER_TENSORRT_PLUGIN registration: it would need getPluginRegistry() from libnvinfer,
// and this library deliberately links no TensorRT library (see DilationFilterPlugin.h).
#include "DilationFilterPlugin.h"
#include "TransposedAttentionPlugin.h"
#include "pluginUtils.h"

#include <cstdint>

#if defined(_WIN32)
#define EDR_PLUGIN_EXPORT __declspec(dllexport)
#else
#define EDR_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

namespace {

nvinfer1::IPluginCreatorInterface* const* creatorList(int32_t& nbCreators) noexcept {
    static edge_derain::DilationFilterPluginCreator dilationFilterCreator;
    static edge_derain::TransposedAttentionPluginCreator transposedAttentionCreator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&dilationFilterCreator,
                                                                  &transposedAttentionCreator};
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

} // namespace

extern "C" {

EDR_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    edge_derain::setPluginLoggerFinder(finder);
}

EDR_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    return creatorList(nbCreators);
}

EDR_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getPluginCreators(int32_t& nbCreators) {
    return creatorList(nbCreators);
}

} // extern "C"
