// The safetensors file format (https://huggingface.co/docs/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON header {name: {dtype, shape, data_offsets: [begin, end]}, ...,
// "__metadata__": {string: string}}, then the data region that the offsets are relative to.
//
// SafetensorsFile memory-maps a file read-only and validates its header completely up front, so
// that nothing downstream can read outside the mapping whatever the file holds. The writers emit
// a header padded with spaces so that the data region starts 64-byte aligned.
#ifndef JETSERVE_ENGINE_CHECKPOINT_SAFETENSORS_H_
#define JETSERVE_ENGINE_CHECKPOINT_SAFETENSORS_H_

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace jetserve {

// The engine's dtype for a safetensors dtype name ("BF16", "F16", "F32"); nullopt otherwise.
std::optional<kernels::DType> DTypeFromSafetensorsName(std::string_view name);

// A tensor shape for messages: "[2, 3]".
std::string ShapeString(const std::vector<int64_t>& shape);

// One tensor described by a file's header.
struct SafetensorsEntry {
  std::string name;
  std::string dtype_name;               // as written in the header, e.g. "BF16" or "I32"
  std::optional<kernels::DType> dtype;  // nullopt: a dtype the engine cannot compute with
  std::vector<int64_t> shape;
  int64_t begin = 0;  // offsets into the data region
  int64_t end = 0;
  const void* data = nullptr;  // into the mapping
  int64_t nbytes() const { return end - begin; }
};

// The validated header of a whole safetensors file held in memory.
struct SafetensorsContents {
  int64_t data_offset = 0;                // 8 + header length
  std::vector<SafetensorsEntry> entries;  // in data-offset order; data points into the bytes
  std::map<std::string, std::string> metadata;
};

// Validates the `size` bytes of a safetensors file by the rules of SafetensorsFile::Open (which
// maps the file and calls this); `source` names the bytes in errors. Separate from Open so that
// the parser can be fuzzed on bytes in memory (tests/fuzz/safetensors_header_fuzz.cc).
absl::StatusOr<SafetensorsContents> ParseSafetensors(const void* bytes, size_t size,
                                                     std::string_view source);

// A memory-mapped, validated safetensors file. Entries stay valid while the object lives.
class SafetensorsFile {
 public:
  // Maps `path` and validates: header length within the file, header JSON well formed, every
  // entry with dtype/shape/data_offsets, offsets inside the data region, byte size equal to
  // numel * element size (for dtypes whose size is known), data aligned to its element size.
  // Unknown dtypes are allowed here; a caller that needs the tensor rejects it.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // nullptr when the file has no tensor of that name.
  const SafetensorsEntry* Find(std::string_view name) const;
  // All tensors, in data-offset order.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  // The "__metadata__" object (string values only; others are ignored).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  int64_t file_size() const { return static_cast<int64_t>(size_); }
  int64_t data_offset() const { return data_offset_; }  // 8 + header length

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* base_ = nullptr;
  size_t size_ = 0;
  int64_t data_offset_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in entries_
  std::map<std::string, std::string> metadata_;
};

// A tensor's description for writing. `data` is only read by WriteSafetensors.
struct SafetensorsTensor {
  std::string name;
  kernels::DType dtype = kernels::DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel * DTypeSize(dtype) bytes
};

// Streams a safetensors file: the header is written by Open from the tensor list, then the
// tensors' bytes are appended in list order, in pieces of any size, without ever holding the
// whole file in memory. Close checks that exactly the declared number of bytes arrived. Open
// fails if a tensor would start misaligned for its dtype (put wider dtypes first).
class SafetensorsWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Open(
      const std::string& path, const std::vector<SafetensorsTensor>& tensors,
      const std::map<std::string, std::string>& metadata);
  ~SafetensorsWriter();  // closes the file without the checks of Close if still open

  absl::Status Append(const void* bytes, size_t n);
  absl::Status Close();

  // Bytes of tensor data the header declares.
  int64_t data_bytes() const { return data_bytes_; }

 private:
  SafetensorsWriter() = default;
  std::string path_;
  std::FILE* file_ = nullptr;
  int64_t data_bytes_ = 0;
  int64_t written_ = 0;
};

// Writes `tensors` (with their data) to `path`: in the given order, after a stable sort by
// descending element size (as the reference implementation does) so that every tensor is aligned
// although the format allows no gaps. Metadata is typically {"format": "pt"}, as PyTorch writes.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<SafetensorsTensor>& tensors,
                              const std::map<std::string, std::string>& metadata);

}  // namespace jetserve

#endif  // JETSERVE_ENGINE_CHECKPOINT_SAFETENSORS_H_
