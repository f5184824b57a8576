#include "pluginUtils.h"

#include <cstdio>
#include <mutex>

namespace edge_derain {
namespace {

std::mutex gLoggerMutex;
nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;

} // namespace

void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept {
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    gLoggerFinder = finder;
}

void pluginLog(char const* plugin, nvinfer1::ILogger::Severity severity, std::string const& message) noexcept {
    try {
        nvinfer1::ILogger* logger = nullptr;
        {
            std::lock_guard<std::mutex> lock(gLoggerMutex);
            if (gLoggerFinder != nullptr) {
                logger = gLoggerFinder->findLogger();
            }
        }
        std::string const text = std::string(plugin) + " plugin: " + message;
        if (logger != nullptr) {
            logger->log(severity, text.c_str());
        } else {
            std::fprintf(stderr, "%s\n", text.c_str());
        }
    } catch (...) { // logging must never throw into TensorRT
    }
}

std::string dimsToString(nvinfer1::Dims const& dims) {
    std::string text = "(";
    for (int32_t i = 0; i < dims.nbDims; ++i) {
        text += (i ? ", " : "") + std::to_string(dims.d[i]);
    }
    return text + (dims.nbDims == 1 ? ",)" : ")"); // Python's tuple notation, as the Python plugins print
}

nvinfer1::Dims constantDims(nvinfer1::DimsExprs const& exprs) {
    nvinfer1::Dims dims{};
    dims.nbDims = exprs.nbDims;
    for (int32_t i = 0; i < exprs.nbDims; ++i) {
        dims.d[i] = exprs.d[i]->isConstant() ? exprs.d[i]->getConstantValue() : -1;
    }
    return dims;
}

bool readInts(nvinfer1::PluginField const& field, std::vector<int64_t>* values) {
    values->clear();
    if (field.length > 0 && field.data == nullptr) {
        return false;
    }
    if (field.type == nvinfer1::PluginFieldType::kINT32) {
        auto const* data = static_cast<int32_t const*>(field.data);
        values->assign(data, data + field.length);
    } else if (field.type == nvinfer1::PluginFieldType::kINT64) {
        auto const* data = static_cast<int64_t const*>(field.data);
        values->assign(data, data + field.length);
    } else {
        return false;
    }
    return true;
}

bool readFloat(nvinfer1::PluginField const& field, double* value) {
    if (field.length != 1 || field.data == nullptr) {
        return false;
    }
    if (field.type == nvinfer1::PluginFieldType::kFLOAT32) {
        *value = *static_cast<float const*>(field.data);
    } else if (field.type == nvinfer1::PluginFieldType::kFLOAT64) {
        *value = *static_cast<double const*>(field.data);
    } else {
        return false;
    }
    return true;
}

std::string readString(nvinfer1::PluginField const& field) {
    if (field.data == nullptr || field.length <= 0) {
        return "";
    }
    std::string text(static_cast<char const*>(field.data), static_cast<size_t>(field.length));
    return text.substr(0, text.find('\0'));
}

} // namespace edge_derain
