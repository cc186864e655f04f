#!/usr/bin/env bash
# Multi-host on one machine: two network namespaces joined by a veth pair stand in for two hosts; zsrun runs
# on each "node" (--nnodes 2, 2 ranks each) and the given dist test binary talks Gloo across the veth.
# Exits 77 (ctest: skipped) with a message where namespaces cannot be created (not root, no ip netns).
#   multihost_netns.sh ZSRUN PROGRAM [ARGS...]
set -u
zsrun=$1
shift
ns0=zsn0_$$ ns1=zsn1_$$ v0=zsv0_$$ v1=zsv1_$$
cleanup() {
  ip netns del "$ns0" 2>/dev/null
  ip netns del "$ns1" 2>/dev/null
}
trap cleanup EXIT
if ! ip netns add "$ns0" 2>/dev/null || ! ip netns add "$ns1" 2>/dev/null; then
  echo "SKIPPED: cannot create network namespaces here (needs root and iproute2's ip netns)"
  exit 77
fi
setup() {
  set -e
  ip link add "$v0" type veth peer name "$v1"
  ip link set "$v0" netns "$ns0"
  ip link set "$v1" netns "$ns1"
  ip -n "$ns0" addr add 10.231.0.1/24 dev "$v0"
  ip -n "$ns1" addr add 10.231.0.2/24 dev "$v1"
  for ns in "$ns0" "$ns1"; do
    ip -n "$ns" link set lo up
  done
  ip -n "$ns0" link set "$v0" up
  ip -n "$ns1" link set "$v1" up
}
if ! (setup) 2>/dev/null; then
  echo "SKIPPED: cannot join the namespaces with a veth pair here"
  exit 77
fi
token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
common=(--nnodes 2 --nproc-per-node 2 --master-addr 10.231.0.1 --master-port $((20000 + $$ % 10000)) --grace 2)
(
  ip netns exec "$ns0" env ZS_JOB_TOKEN="$token" "$zsrun" "${common[@]}" --node-rank 0 -- "$@" 2>&1 | sed 's/^/[node0] /'
  exit "${PIPESTATUS[0]}"
) &
node0=$!
ip netns exec "$ns1" env ZS_JOB_TOKEN="$token" "$zsrun" "${common[@]}" --node-rank 1 -- "$@" 2>&1 | sed 's/^/[node1] /'
rc1=${PIPESTATUS[0]}
wait "$node0"
rc0=$?
echo "node 0 exited $rc0, node 1 exited $rc1"
[ "$rc0" -eq 0 ] && [ "$rc1" -eq 0 ]
