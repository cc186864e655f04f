// Fuzz target: bytes -> store request and reply. Decoding must stay inside the bytes and either succeed or
// throw zs::Error; a decoded request re-encodes to bytes that decode to the same request.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/error.h"
#include "core/store_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  try {
    const zs::store::Request r = zs::store::decode_request(bytes);
    const zs::store::Request again = zs::store::decode_request(zs::store::encode(r));
    if (again.op != r.op || again.number != r.number || again.keys != r.keys || again.value != r.value) std::abort();
  } catch (const zs::Error&) {
  }
  try {
    zs::store::decode_reply(bytes);
  } catch (const zs::Error&) {
  }
  return 0;
}
