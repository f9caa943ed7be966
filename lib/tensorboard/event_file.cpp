#include "tensorboard/event_file.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <system_error>

#include "tensorboard_event.pb.h"

namespace fs = std::filesystem;

namespace tlmoe::tensorboard {

namespace {

// The byte-at-a-time table of the reflected Castagnoli polynomial.
const std::array<std::uint32_t, 256>& crc_table() {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

void put_le(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  std::string h(buf);
  for (char& c : h)
    if (c == '/' || c == '\\') c = '_';
  return h;
}

// A name no other writer of this process or another process has taken: seconds, host, pid and
// a per-process counter (readers order a directory's files by name: seconds first).
fs::path new_file_name(const fs::path& dir) {
  static std::atomic<int> counter{0};
  const auto secs = static_cast<long long>(std::floor(wall_seconds()));
  for (;;) {
    const fs::path p = dir / ("events.out.tfevents." + std::to_string(secs) + "." + host_name() + "." +
                              std::to_string(::getpid()) + "." + std::to_string(counter++));
    if (!fs::exists(p)) return p;
  }
}

std::error_code last_error() { return std::error_code(errno != 0 ? errno : EIO, std::generic_category()); }

}  // namespace

std::uint32_t crc32c(std::string_view data, std::uint32_t crc) {
  const auto& t = crc_table();
  crc = ~crc;
  for (unsigned char b : data) crc = t[(crc ^ b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

std::uint32_t masked_crc32c(std::string_view data) {
  const std::uint32_t c = crc32c(data);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tf_record(std::string_view data) {
  std::string len;
  put_le(len, data.size(), 8);
  std::string out = len;
  put_le(out, masked_crc32c(len), 4);
  out.append(data);
  put_le(out, masked_crc32c(data), 4);
  return out;
}

EventWriter::EventWriter(const fs::path& dir) {
  fs::create_directories(dir);
  path_ = new_file_name(dir);
  errno = 0;
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw fs::filesystem_error("cannot create a TensorBoard event file", path_, last_error());
  proto::Event e;
  e.set_wall_time(wall_seconds());
  e.set_file_version("brain.Event:2");
  write_event(e.SerializeAsString());
}

void EventWriter::session_start(std::int64_t step) {
  proto::Event e;
  e.set_wall_time(wall_seconds());
  e.set_step(step);
  e.mutable_session_log()->set_status(proto::SessionLog::START);
  write_event(e.SerializeAsString());
}

void EventWriter::scalars(std::int64_t step, const std::vector<Scalar>& values) {
  proto::Event e;
  e.set_wall_time(wall_seconds());
  e.set_step(step);
  auto* s = e.mutable_summary();
  for (const auto& v : values) {
    if (!std::isfinite(v.value)) continue;
    auto* val = s->add_value();
    val->set_tag(v.tag);
    val->set_simple_value(static_cast<float>(v.value));
  }
  if (s->value_size() > 0) write_event(e.SerializeAsString());
}

void EventWriter::image(std::int64_t step, const std::string& tag, const std::string& png, int width, int height) {
  proto::Event e;
  e.set_wall_time(wall_seconds());
  e.set_step(step);
  auto* val = e.mutable_summary()->add_value();
  val->set_tag(tag);
  auto* img = val->mutable_image();
  img->set_width(width);
  img->set_height(height);
  img->set_colorspace(3);
  img->set_encoded_image_string(png);
  write_event(e.SerializeAsString());
}

void EventWriter::write_event(const std::string& serialized) {
  errno = 0;
  out_ << tf_record(serialized);
  out_.flush();
  if (!out_) throw fs::filesystem_error("cannot write a TensorBoard event", path_, last_error());
}

}  // namespace tlmoe::tensorboard
