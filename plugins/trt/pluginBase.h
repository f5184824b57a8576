// The IPluginV3 plumbing both edge_derain plugins share, as CRTP bases: the capability interfaces, the
// plugin's identity (Derived::kName, version "1", namespace ""), one output, clone (through
// Derived::copy(), logging instead of throwing) and attachToContext as a clone (the plugins keep no
// per-context state); and the creator's identity. Header-only, no CUDA calls.
#pragma once

#include "pluginUtils.h"

#include "NvInferRuntime.h"

#include <cstdint>
#include <exception>
#include <string>

namespace edge_derain {

constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "";

template <typename Derived>
class PluginV3Base : public nvinfer1::IPluginV3,
                     public nvinfer1::IPluginV3OneCore,
                     public nvinfer1::IPluginV3OneBuild,
                     public nvinfer1::IPluginV3OneRuntime {
public:
    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override {
        switch (type) {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override {
        try {
            return static_cast<Derived const*>(this)->copy();
        } catch (std::exception const& e) {
            pluginLog(Derived::kName, nvinfer1::ILogger::Severity::kERROR, std::string("clone failed: ") + e.what());
        }
        return nullptr;
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return Derived::kName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 1; }

    // IPluginV3OneRuntime
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override {
        return clone(); // stateless apart from the plugin fields: nothing per-context to set up
    }
};

//! `Plugin` is the plugin class the creator makes (its kName is the creator's name).
template <typename Plugin>
class PluginCreatorBase : public nvinfer1::IPluginCreatorV3One {
public:
    char const* getPluginName() const noexcept override { return Plugin::kName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    char const* getPluginNamespace() const noexcept override { return kPluginNamespace; }
};

} // namespace edge_derain
