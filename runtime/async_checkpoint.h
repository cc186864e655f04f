// A checkpoint save that finishes in the background (checkpoint.async): the engine stages this rank's file
// in host memory between steps and training goes on while a thread writes and fsyncs it. The ranks meet
// through the job's store, never through the training's collectives: each writer publishes its file's
// size and checksum (or its error), rank 0 commits the manifest and `latest` once every writer's has
// arrived, and publishes the verdict, which every rank then reads. A save that fails (or a rank that dies)
// leaves the previous checkpoint the latest, as a synchronous save does.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/store.h"
#include "runtime/checkpoint.h"
#include "runtime/safetensors.h"

namespace zs {

class AsyncCheckpoint {
 public:
  struct Save {
    std::string root, tmp_dir;  // the checkpoint root and this save's temporary step directory
    ckpt::Manifest manifest;    // everything but the files' digests
    int keep = 3;
    int rank = 0;                            // in the world
    bool writes = false;                     // this rank writes file `rank` (the first shard group does)
    int writers = 1;                         // files in the checkpoint
    std::vector<SafetensorsTensor> tensors;  // this rank's file: declared tensors ...
    std::map<std::string, std::string> metadata;
    const void* data = nullptr;  // ... and their bytes, in order (the staged copy; stays untouched until done)
    std::size_t bytes = 0;
    std::string what;  // "save_checkpoint('ckpt') of step 100", for errors
    std::chrono::steady_clock::time_point staged_at = std::chrono::steady_clock::now();
  };

  // store: the engine's group's (this restart attempt's namespace in the job's); group: its name; timeout:
  // how long a rank waits for another's part. The group's ranks create their engines on it, so these, in the
  // same order: the keys are numbered per group by creation.
  AsyncCheckpoint(std::shared_ptr<Store> store, const std::string& group, Millis timeout);
  ~AsyncCheckpoint();  // waits for a save in flight; logs (cannot throw) its failure
  AsyncCheckpoint(const AsyncCheckpoint&) = delete;
  AsyncCheckpoint& operator=(const AsyncCheckpoint&) = delete;

  // Starts writing; the previous save must be finished (wait()).
  void start(Save s);
  // True while a save is being written or committed.
  bool busy();
  // Blocks until the save in flight (if any) is committed or has failed; throws zs::Error, with the same
  // failure on every rank, when it failed.
  void wait();

 private:
  std::string key(uint64_t save, const std::string& what) const;  // "ckpt/<group>/<n>/<save>/<what>"
  void run(Save s, uint64_t save);                                // the thread's body
  void write_and_publish(const Save& s, uint64_t save);
  std::string commit(Save& s, uint64_t save);  // rank 0, every writer's digest in: "" or the failure
  std::string await_verdict(uint64_t save);    // the other ranks: "" or the failure

  std::shared_ptr<Store> store_;
  Millis timeout_;
  std::string prefix_;  // "ckpt/<group>/<n>": this process's n-th on the group (the same on its every rank)
  uint64_t saves_ = 0;  // saves started
  std::thread thread_;
  std::atomic<bool> done_{true};  // the thread has finished (it may not be joined yet)
  std::string failure_;           // of the last finished save, until wait() reports it (read after the join)
};

}  // namespace zs
