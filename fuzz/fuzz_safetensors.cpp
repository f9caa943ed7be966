// Fuzz target: the safetensors reader (lib/io/safetensors.cpp): read_safetensors_header and
// load_safetensors on the input as a .safetensors file; what loads must agree with the header.
#include "fuzz_util.h"
#include "io/safetensors.h"

using namespace tlmoe;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = fuzz::scratch() / "model.safetensors";
  fuzz::write_bytes(file, fuzz::as_text(data, size));

  io::SafetensorsHeader header;
  bool header_ok = false;
  fuzz::expect_input_error("read_safetensors_header", [&] {
    header = io::read_safetensors_header(file);
    header_ok = true;
  });
  fuzz::expect_input_error("load_safetensors", [&] {
    io::SafetensorsFile f = io::load_safetensors(file);
    fuzz::check(header_ok, "load_safetensors", "loads a file whose header read_safetensors_header refuses");
    fuzz::check(f.names.size() == header.tensors.size() && f.tensors.size() == f.names.size(),
                "load_safetensors", "tensor count differs from the header");
    fuzz::check(f.metadata == header.metadata, "load_safetensors", "metadata differs from the header");
    for (std::size_t i = 0; i < f.names.size(); ++i) {
      const auto& info = header.tensors[i];
      const torch::Tensor& t = f.tensors.at(f.names[i]);
      fuzz::check(f.names[i] == info.name, "load_safetensors", "tensor order differs from the header");
      fuzz::check(t.scalar_type() == info.dtype && t.sizes().vec() == info.shape && t.is_contiguous(),
                  "load_safetensors", "tensor '" + info.name + "' differs from its header entry");
      fuzz::check(static_cast<std::uint64_t>(t.nbytes()) == info.end - info.begin, "load_safetensors",
                  "tensor '" + info.name + "' has another byte size than its range");
    }
  });
  return 0;
}
