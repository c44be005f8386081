#include "engine/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/checkpoint/json_excerpt.h"
#include "nlohmann/json.hpp"

namespace jetserve {
namespace {

// The safetensors reference implementation refuses headers above 100 MB; so do we, so that a
// corrupt length never makes us parse (and allocate for) gigabytes of "JSON".
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
// Writers pad the header so that tensor data starts at a multiple of this, which keeps every
// tensor aligned for vector loads when tensors have sizes that are multiples of 64 bytes.
constexpr int64_t kDataAlignment = 64;

// Element size of every dtype the format defines; 0 for sub-byte or unknown ones (whose byte size
// cannot be checked, and which the engine never uses anyway).
int SafetensorsElementSize(std::string_view name) {
  static const auto* const kSizes = new std::unordered_map<std::string_view, int>{
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"I64", 8}, {"U64", 8}, {"F64", 8},
  };
  auto it = kSizes->find(name);
  return it == kSizes->end() ? 0 : it->second;
}

// A JSON value as a non-negative int64, or nullopt (negative, fractional, too big, not a number).
std::optional<int64_t> NonNegativeInt(const nlohmann::json& j) {
  if (j.is_number_unsigned()) {
    uint64_t v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(v);
  }
  if (j.is_number_integer()) {
    int64_t v = j.get<int64_t>();
    if (v < 0) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

void AppendLittleEndian64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::optional<kernels::DType> DTypeFromSafetensorsName(std::string_view name) {
  if (name == "BF16") return kernels::DType::kBF16;
  if (name == "F16") return kernels::DType::kF16;
  if (name == "F32") return kernels::DType::kF32;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Reader

absl::StatusOr<SafetensorsContents> ParseSafetensors(const void* data, size_t size,
                                                     std::string_view source) {
  const std::string src(source);
  auto err = [&src](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(src, ": ", parts...));
  };
  if (size < 8) return err("file is ", size, " bytes, too small for a safetensors header");
  const auto* bytes = static_cast<const uint8_t*>(data);
  SafetensorsContents contents;

  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  if (header_len > size - 8) {
    return err("header length ", header_len, " exceeds the file size (", size,
               " bytes); the file is truncated or not safetensors");
  }
  if (header_len > kMaxHeaderBytes) {
    return err("header length ", header_len, " exceeds the ", kMaxHeaderBytes, "-byte limit");
  }
  contents.data_offset = static_cast<int64_t>(8 + header_len);
  const int64_t data_size = static_cast<int64_t>(size) - contents.data_offset;

  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  nlohmann::json header = nlohmann::json::parse(header_begin, header_begin + header_len,
                                                /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return err("header is not valid JSON");
  if (!header.is_object()) return err("header is not a JSON object");

  for (auto& [name, desc] : header.items()) {
    if (name == "__metadata__") {
      if (desc.is_object()) {
        for (auto& [k, v] : desc.items()) {
          if (v.is_string()) contents.metadata[k] = v.get<std::string>();
        }
      }
      continue;
    }
    // A named reference: clang before 16 cannot capture structured bindings in lambdas.
    const std::string& tensor_name = name;
    auto bad = [&](auto&&... parts) {
      return err("tensor '", TextExcerpt(tensor_name), "': ", parts...);
    };
    if (!desc.is_object()) return bad("header entry is not an object");
    auto dtype_it = desc.find("dtype");
    auto shape_it = desc.find("shape");
    auto offsets_it = desc.find("data_offsets");
    if (dtype_it == desc.end() || !dtype_it->is_string()) return bad("missing string 'dtype'");
    if (shape_it == desc.end() || !shape_it->is_array()) return bad("missing array 'shape'");
    if (offsets_it == desc.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
      return bad("'data_offsets' must be an array [begin, end]");
    }
    SafetensorsEntry entry;
    entry.name = name;
    entry.dtype_name = dtype_it->get<std::string>();
    entry.dtype = DTypeFromSafetensorsName(entry.dtype_name);

    // numel with overflow detection: a corrupt shape must not wrap around into a small size.
    int64_t numel = 1;
    bool overflow = false;
    for (const auto& d : *shape_it) {
      std::optional<int64_t> dim = NonNegativeInt(d);
      if (!dim)
        return bad("shape ", JsonExcerpt(*shape_it),
                   " has a dimension that is not a non-negative integer");
      entry.shape.push_back(*dim);
      if (*dim != 0 && numel > std::numeric_limits<int64_t>::max() / *dim) overflow = true;
      if (!overflow) numel *= *dim;
    }
    std::optional<int64_t> begin = NonNegativeInt((*offsets_it)[0]);
    std::optional<int64_t> end = NonNegativeInt((*offsets_it)[1]);
    if (!begin || !end || *begin > *end) {
      return bad("invalid data_offsets ", JsonExcerpt(*offsets_it));
    }
    if (*end > data_size) {
      return bad("data_offsets [", *begin, ", ", *end, "] lie outside the data region (", data_size,
                 " bytes); the file is truncated or corrupt");
    }
    entry.begin = *begin;
    entry.end = *end;
    const int elem = SafetensorsElementSize(entry.dtype_name);
    if (elem > 0) {
      // Zero-size tensors are valid; otherwise the overflow flag means numel * elem cannot match.
      bool fits = !overflow && (numel == 0 || numel <= std::numeric_limits<int64_t>::max() / elem);
      if (!fits || numel * elem != entry.nbytes()) {
        return bad("shape ", ShapeString(entry.shape), " of ", entry.dtype_name, " needs ",
                   fits ? absl::StrCat(numel * elem) : std::string("more than 2^63"),
                   " bytes but data_offsets span ", entry.nbytes());
      }
      // The kernels read through typed pointers; misaligned data would be undefined behaviour.
      // A mapping is page aligned, so the file offset decides.
      if ((contents.data_offset + entry.begin) % elem != 0) {
        return bad("data at file offset ", contents.data_offset + entry.begin,
                   " is not aligned to its element size ", elem);
      }
    }
    entry.data = bytes + contents.data_offset + entry.begin;
    contents.entries.push_back(std::move(entry));
  }
  std::sort(contents.entries.begin(), contents.entries.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
              // Zero-size tensors before the tensor that starts where they sit.
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  // The format packs the tensors back to back over the whole data region (the safetensors
  // library refuses anything else): an overlap would give two tensors the same bytes, silently.
  int64_t expected = 0;
  for (const SafetensorsEntry& e : contents.entries) {
    if (e.begin != expected) {
      return err(
          "tensor '", e.name, "': data_offsets [", e.begin, ", ", e.end, "] ",
          e.begin < expected ? "overlap the tensor before" : "leave a gap after the tensor before",
          " (which ends at ", expected, "): tensors must be packed back to back");
    }
    expected = e.end;
  }
  if (expected != data_size) {
    return err("the tensors end at byte ", expected, " of a ", data_size,
               "-byte data region: the rest belongs to no tensor");
  }
  return contents;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  auto err = [&path](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", parts...));
  };

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    std::string msg = absl::StrCat(path, ": cannot open: ", std::strerror(e));
    return e == ENOENT ? absl::NotFoundError(msg) : absl::InvalidArgumentError(msg);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return err("not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return err("file is ", size, " bytes, too small for a safetensors header");
  }
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (base == MAP_FAILED) return err("mmap failed: ", std::strerror(map_errno));
  file->base_ = base;
  file->size_ = size;

  absl::StatusOr<SafetensorsContents> contents = ParseSafetensors(base, size, path);
  if (!contents.ok()) return contents.status();
  file->data_offset_ = contents->data_offset;
  file->entries_ = std::move(contents->entries);
  file->metadata_ = std::move(contents->metadata);
  for (size_t i = 0; i < file->entries_.size(); ++i) file->index_[file->entries_[i].name] = i;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

const SafetensorsEntry* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

// ---------------------------------------------------------------------------------------------
// Writer

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Open(
    const std::string& path, const std::vector<SafetensorsTensor>& tensors,
    const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps tensors in the order given, which is also their data order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::unordered_set<std::string> seen;
  int64_t offset = 0;
  for (const SafetensorsTensor& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat(path, ": invalid tensor name '", t.name, "'"));
    }
    if (!seen.insert(t.name).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": duplicate tensor '", t.name, "'"));
    }
    int64_t nbytes = kernels::DTypeSize(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0 || (d != 0 && nbytes > (int64_t{1} << 60) / d)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor '", t.name, "' has invalid shape ", ShapeString(t.shape)));
      }
      nbytes *= d;
    }
    // Gaps between tensors are invalid in the format, so a tensor must start where the previous
    // one ended; that offset has to suit its element size (the kernels load typed pointers).
    if (offset % kernels::DTypeSize(t.dtype) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor '", t.name, "' (", std::string(kernels::DTypeName(t.dtype)),
                       ") would start at unaligned offset ", offset, "; write wider dtypes first"));
    }
    nlohmann::ordered_json desc = nlohmann::ordered_json::object();
    desc["dtype"] = std::string(kernels::DTypeName(t.dtype));
    desc["shape"] = t.shape;
    desc["data_offsets"] = {offset, offset + nbytes};
    header[t.name] = std::move(desc);
    offset += nbytes;
  }
  std::string header_text = header.dump();
  // Spaces are valid JSON whitespace; pad so that 8 + header length is a multiple of 64.
  const size_t padded =
      (8 + header_text.size() + kDataAlignment - 1) / kDataAlignment * kDataAlignment;
  header_text.append(padded - 8 - header_text.size(), ' ');

  auto writer = std::unique_ptr<SafetensorsWriter>(new SafetensorsWriter());
  writer->path_ = path;
  writer->data_bytes_ = offset;
  // Written under a temporary name and renamed by Close, so that a crash or error never leaves
  // a plausible-looking but incomplete file behind.
  const std::string tmp = path + ".tmp";
  writer->file_ = std::fopen(tmp.c_str(), "wb");
  if (writer->file_ == nullptr) {
    return absl::InternalError(absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  }
  std::setvbuf(writer->file_, nullptr, _IOFBF, size_t{1} << 20);
  std::string prefix;
  AppendLittleEndian64(header_text.size(), &prefix);
  prefix += header_text;
  if (std::fwrite(prefix.data(), 1, prefix.size(), writer->file_) != prefix.size()) {
    return absl::InternalError(absl::StrCat(tmp, ": write failed: ", std::strerror(errno)));
  }
  return writer;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove((path_ + ".tmp").c_str());
  }
}

absl::Status SafetensorsWriter::Append(const void* bytes, size_t n) {
  if (file_ == nullptr) return absl::FailedPreconditionError(absl::StrCat(path_, ": not open"));
  if (written_ + static_cast<int64_t>(n) > data_bytes_) {
    return absl::InternalError(absl::StrCat(path_, ": more data appended (", written_ + n,
                                            " bytes) than the header declares (", data_bytes_,
                                            ")"));
  }
  if (n > 0 && std::fwrite(bytes, 1, n, file_) != n) {
    return absl::InternalError(absl::StrCat(path_, ".tmp: write failed: ", std::strerror(errno)));
  }
  written_ += static_cast<int64_t>(n);
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Close() {
  if (file_ == nullptr) return absl::FailedPreconditionError(absl::StrCat(path_, ": not open"));
  if (written_ != data_bytes_) {
    return absl::InternalError(absl::StrCat(
        path_, ": ", written_, " bytes of tensor data written, ", data_bytes_, " declared"));
  }
  const std::string tmp = path_ + ".tmp";
  std::FILE* f = file_;
  file_ = nullptr;
  if (std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat(tmp, ": close failed: ", std::strerror(errno)));
  }
  if (std::rename(tmp.c_str(), path_.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat(path_, ": rename failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<SafetensorsTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  // Wider dtypes first (stable, so a single-dtype list keeps its order): the data region starts
  // 64-byte aligned, so every tensor then starts aligned to its element size without padding.
  std::vector<SafetensorsTensor> ordered = tensors;
  std::stable_sort(ordered.begin(), ordered.end(),
                   [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
                     return kernels::DTypeSize(a.dtype) > kernels::DTypeSize(b.dtype);
                   });
  auto writer_or = SafetensorsWriter::Open(path, ordered, metadata);
  if (!writer_or.ok()) return writer_or.status();
  SafetensorsWriter& writer = **writer_or;
  for (const SafetensorsTensor& t : ordered) {
    int64_t nbytes = kernels::DTypeSize(t.dtype);
    for (int64_t d : t.shape) nbytes *= d;
    if (nbytes > 0 && t.data == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "' has no data"));
    }
    absl::Status s = writer.Append(t.data, static_cast<size_t>(nbytes));
    if (!s.ok()) return s;
  }
  return writer.Close();
}

}  // namespace jetserve
