// TensorBoard event files (docs/tensorboard.md): the TFRecord framing with its masked CRC32C,
// and a writer of scalar, image and session-start events. The only part of tlmoe that sees the
// protobuf library (tensorboard_event.proto); nothing here depends on torch.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace tlmoe::tensorboard {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), continuing from `crc` (0 to start).
std::uint32_t crc32c(std::string_view data, std::uint32_t crc = 0);
// The TFRecord checksum: crc32c rotated right by 15 bits plus 0xa282ead8.
std::uint32_t masked_crc32c(std::string_view data);
// One record: the length as 8 bytes little-endian, its masked CRC (4 bytes LE), the data, the
// data's masked CRC (4 bytes LE).
std::string tf_record(std::string_view data);

struct Scalar {
  std::string tag;
  double value = 0;  // stored as a 32-bit float, as TensorBoard's simple_value
};

// Appends events to a new file {dir}/events.out.tfevents.{seconds}.{host}.{pid}.{n} (created with
// its parents), whose first event names the format version. Every event is flushed when written:
// a process killed at any moment leaves at most one torn record at the end, which readers skip.
// Write errors throw std::filesystem::filesystem_error naming the file.
class EventWriter {
 public:
  explicit EventWriter(const std::filesystem::path& dir);
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  // A (re)start whose first step is `step`: TensorBoard drops the events of step >= `step` that it
  // read before (what a killed run logged after its last checkpoint).
  void session_start(std::int64_t step);
  // Scalars of one step in one event; non-finite values are left out.
  void scalars(std::int64_t step, const std::vector<Scalar>& values);
  // A PNG image (RGB) of width x height pixels.
  void image(std::int64_t step, const std::string& tag, const std::string& png, int width, int height);

  const std::filesystem::path& path() const { return path_; }

 private:
  void write_event(const std::string& serialized);

  std::filesystem::path path_;
  std::ofstream out_;
};

}  // namespace tlmoe::tensorboard
