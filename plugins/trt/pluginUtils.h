// Helpers shared by the edge_derain TensorRT plugins: logging through the logger TensorRT hands over
// (setLoggerFinder), shape formatting and plugin-field readers. Host-only, no CUDA calls.
#pragma once

#include "NvInferRuntime.h"

#include <cstdint>
#include <string>
#include <vector>

namespace edge_derain {

// The TensorRT types the plugin sources name unqualified.
using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::ILogger;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;

//! Routes plugin diagnostics to the logger TensorRT hands over through setLoggerFinder(); stderr
//! before that.
void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Logs "<plugin> plugin: <message>" at `severity`.
void pluginLog(char const* plugin, nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

//! "(1, 3, 8, 8)", "(3,)": the shape as a Python tuple.
std::string dimsToString(nvinfer1::Dims const& dims);

//! Build-time shapes as Dims, with -1 where a dimension is not a build-time constant.
nvinfer1::Dims constantDims(nvinfer1::DimsExprs const& exprs);

//! Reads an INT32 or INT64 field (the ONNX parser and the Python API produce either) into int64 values;
//! false for any other type.
bool readInts(nvinfer1::PluginField const& field, std::vector<int64_t>* values);

//! Reads a FLOAT32 or FLOAT64 field with exactly one value; false otherwise.
bool readFloat(nvinfer1::PluginField const& field, double* value);

//! A CHAR field as a string (some producers count the terminating NUL in the length).
std::string readString(nvinfer1::PluginField const& field);

} // namespace edge_derain
