// AsyncCheckpoint: the background half of a checkpoint.async save (see the header).
#include "runtime/async_checkpoint.h"

#include <fmt/ranges.h>

#include <charconv>
#include <chrono>
#include <filesystem>
#include <mutex>

#include "core/byte_size.h"
#include "core/error.h"
#include "core/log.h"

namespace zs {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kFirstPoll = std::chrono::milliseconds(5), kLastPoll = std::chrono::milliseconds(250);
constexpr std::size_t kChunk = std::size_t{8} << 20;  // written (and hashed) while still in the cache

// Polls the store until `k` is set or the deadline passes: never holding the connection (the training thread
// may need it), and backing off so that a long write costs the store a few requests per second per rank.
bool await_key(Store& store, const std::string& k, Clock::time_point deadline) {
  for (auto pause = kFirstPoll; !store.check({k}); pause = std::min(2 * pause, kLastPoll)) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
  }
  return true;
}

std::string seconds(Millis t) {
  return fmt::format("{:g} s", std::chrono::duration<double>(t).count());
}

// "<bytes> <xxh64>", as write_and_publish reports a file.
bool parse_digest(const std::string& s, FileDigest& d) {
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, d.bytes);
  if (ec != std::errc() || p == end || *p != ' ') return false;
  auto [q, ec2] = std::from_chars(p + 1, end, d.xxh64);
  return ec2 == std::errc() && q == end;
}

// The n-th AsyncCheckpoint of this process on the group `name`.
uint64_t next_instance(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, uint64_t> count;
  std::lock_guard lk(mu);
  return count[name]++;
}

}  // namespace

AsyncCheckpoint::AsyncCheckpoint(std::shared_ptr<Store> store, const std::string& group, Millis timeout)
    : store_(std::move(store)), timeout_(timeout), prefix_(fmt::format("ckpt/{}/{}", group, next_instance(group))) {
  ZS_CHECK(store_, "checkpoint.async needs the job's store, and this engine's group has none");
}

AsyncCheckpoint::~AsyncCheckpoint() {
  try {
    wait();
  } catch (const std::exception& e) {
    log::error("{}", e.what());
  }
}

std::string AsyncCheckpoint::key(uint64_t save, const std::string& what) const {
  return fmt::format("{}/{}/{}", prefix_, save, what);
}

void AsyncCheckpoint::start(Save s) {
  ZS_CHECK(!thread_.joinable(), "AsyncCheckpoint::start with a save in flight: wait() first");
  done_ = false;
  thread_ = std::thread([this, s = std::move(s), save = saves_++]() mutable { run(std::move(s), save); });
}

bool AsyncCheckpoint::busy() {
  return !done_;
}

void AsyncCheckpoint::wait() {
  if (thread_.joinable()) thread_.join();
  std::string failure;
  failure.swap(failure_);  // reported once
  if (!failure.empty()) throw Error(failure);
}

void AsyncCheckpoint::run(Save s, uint64_t save) {
  std::string failure;
  try {
    if (s.writes) write_and_publish(s, save);
    failure = s.rank == 0 ? commit(s, save) : await_verdict(save);
  } catch (const std::exception& e) {  // the store itself failed: the job is going down
    failure = e.what();
  }
  if (!failure.empty())
    failure_ =
        fmt::format("rank {}: {} failed (the previous checkpoint stays the latest): {}", s.rank, s.what, failure);
  done_ = true;
}

void AsyncCheckpoint::write_and_publish(const Save& s, uint64_t save) {
  std::string report;
  try {
    const fs::path path = fs::path(s.tmp_dir) / ckpt::rank_file_name(s.rank);
    SafetensorsWriter w(path.string(), s.tensors, s.metadata);
    const auto* p = static_cast<const char*>(s.data);
    for (std::size_t at = 0; at < s.bytes; at += kChunk) w.write(p + at, std::min(kChunk, s.bytes - at));
    const FileDigest d = w.finish();
    report = fmt::format("{} {}", d.bytes, d.xxh64);
  } catch (const std::exception& e) {
    report = fmt::format("!{}", e.what());
  }
  store_->set_string(key(save, fmt::format("file/{}", s.rank)), report);
}

std::string AsyncCheckpoint::commit(Save& s, uint64_t save) {
  const Clock::time_point deadline = Clock::now() + timeout_;
  uint64_t bytes = 0;
  std::vector<std::string> failures;
  for (int w = 0; w < s.writers; ++w) {
    const std::string k = key(save, fmt::format("file/{}", w));
    if (!await_key(*store_, k, deadline)) {
      failures.push_back(
          fmt::format("rank {} did not report its file within {} (comm.timeout_s)", w, seconds(timeout_)));
      continue;
    }
    const std::string report = store_->get_string(k, timeout_);
    FileDigest& d = s.manifest.files.at(static_cast<std::size_t>(w)).digest;
    if (report.starts_with("!") || !parse_digest(report, d))
      failures.push_back(fmt::format("rank {}: {}", w, report.substr(report.starts_with("!") ? 1 : 0)));
    bytes += d.bytes;
  }
  std::string failure = fmt::format("{}", fmt::join(failures, "; "));
  try {
    if (failure.empty()) ckpt::commit(s.root, s.tmp_dir, s.manifest, s.keep);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (failure.empty()) {
    log::info("saved checkpoint of step {} to {} in the background ({} in {:.2f} s since the copy)", s.manifest.step,
              (fs::path(s.root) / ckpt::step_dir_name(s.manifest.step)).string(),
              format_bytes(static_cast<double>(bytes)),
              std::chrono::duration<double>(Clock::now() - s.staged_at).count());
  } else {
    std::error_code ec;
    fs::remove_all(s.tmp_dir, ec);
  }
  store_->set_string(key(save, "verdict"), failure.empty() ? "ok" : "!" + failure);
  return failure;
}

std::string AsyncCheckpoint::await_verdict(uint64_t save) {
  // Rank 0 waits up to the timeout for the last writer, then commits.
  const std::string k = key(save, "verdict");
  if (!await_key(*store_, k, Clock::now() + 2 * timeout_ + std::chrono::seconds(60)))
    return fmt::format("rank 0 did not commit it within {} (2 x comm.timeout_s + 60 s)",
                       seconds(2 * timeout_ + std::chrono::seconds(60)));
  const std::string v = store_->get_string(k, timeout_);
  return v == "ok" ? "" : v.substr(1);
}

}  // namespace zs
