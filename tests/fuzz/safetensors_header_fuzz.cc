// Fuzzes the safetensors reader's validation (ParseSafetensors, what SafetensorsFile::Open runs
// on a mapped file) with arbitrary file bytes, and checks what it promises about every file it
// accepts: each tensor lies inside the data region, is aligned and exactly as large as its dtype
// and shape say, and the entries come in data-offset order.
#include <cstdint>
#include <limits>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/checkpoint/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using jetserve::SafetensorsEntry;
  auto parsed = jetserve::ParseSafetensors(data, size, "fuzz");
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument,
               parsed.status().ToString());
    return 0;
  }
  FUZZ_CHECK(parsed->data_offset >= 8 && static_cast<uint64_t>(parsed->data_offset) <= size,
             absl::StrCat("data_offset ", parsed->data_offset));
  const int64_t data_size = static_cast<int64_t>(size) - parsed->data_offset;
  const uint8_t* region = data + parsed->data_offset;
  std::set<std::string> names;
  int64_t previous_begin = 0;
  for (const SafetensorsEntry& e : parsed->entries) {
    FUZZ_CHECK(names.insert(e.name).second, "duplicate name " + e.name);
    FUZZ_CHECK(e.name != "__metadata__", "metadata taken for a tensor");
    FUZZ_CHECK(0 <= e.begin && e.begin <= e.end && e.end <= data_size,
               absl::StrCat(e.name, ": [", e.begin, ", ", e.end, ") outside ", data_size));
    FUZZ_CHECK(e.begin >= previous_begin, "entries not in data-offset order");
    previous_begin = e.begin;
    FUZZ_CHECK(e.data == region + e.begin, "data pointer");
    if (e.dtype.has_value()) {
      // The engine will read these through typed pointers: size and alignment must be exact.
      const int64_t elem = jetserve::kernels::DTypeSize(*e.dtype);
      int64_t numel = 1;
      for (int64_t d : e.shape) {
        FUZZ_CHECK(d >= 0, "negative dimension");
        FUZZ_CHECK(d == 0 || numel <= std::numeric_limits<int64_t>::max() / d, "numel overflow");
        numel *= d;
      }
      FUZZ_CHECK(numel <= std::numeric_limits<int64_t>::max() / elem, "size overflow");
      FUZZ_CHECK(numel * elem == e.nbytes(),
                 absl::StrCat(e.name, ": ", numel, " elements in ", e.nbytes(), " bytes"));
      FUZZ_CHECK((parsed->data_offset + e.begin) % elem == 0, e.name + ": misaligned");
      // Touch the first and last byte: ASan reports it if they lie outside the input.
      if (e.nbytes() > 0) {
        volatile uint8_t first = static_cast<const uint8_t*>(e.data)[0];
        volatile uint8_t last = static_cast<const uint8_t*>(e.data)[e.nbytes() - 1];
        (void)first;
        (void)last;
      }
    }
  }
  return 0;
}
