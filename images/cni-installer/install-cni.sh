#!/bin/sh
# Ambit's node installer: puts the ambit-cni plugin on the host, chains it into the node's
# primary CNI configuration, SNATs kubelet probes to the probe source, and undoes all of it
# when it exits (helm uninstall deletes the DaemonSet, whose pods then run this cleanup).
#
# Usage: install-cni.sh run        install, keep the chain entry in place, clean up on TERM/INT
#        install-cni.sh install    install once and exit
#        install-cni.sh uninstall  remove once and exit
#
# Environment (defaults in brackets):
#   CNI_BIN_DIR [/host/opt/cni/bin]        host CNI binary folder, mounted
#   CNI_NET_DIR [/host/etc/cni/net.d]      host CNI configuration folder, mounted
#   PLUGIN_BINARY [/opt/ambit/bin/ambit-cni]
#   AGENT_SOCKET [/var/run/ambit/cni.sock] node agent socket, as a host path
#   EXCLUDE_NAMESPACES [kube-system]       comma-separated, never reported to the agent
#   AGENT_CONNECT_TIMEOUT_MS [2000], AGENT_CALL_TIMEOUT_MS [10000]
#   PROBE_SNAT [true]                      install the kubelet probe SNAT (nftables)
#   PROBE_SOURCE_V4 [169.254.7.127], PROBE_SOURCE_V6 [fd16:9254:7127:1337:ffff:ffff:ffff:ffff]
#   POD_INTERFACES [veth*,cali*,lxc*,cni*] host-side pod interfaces (nft wildcards)
#   CHECK_INTERVAL [5]                     seconds between checks that the chain entry is there
#   UNINSTALL_ON_EXIT [true]               remove everything on TERM/INT in `run`
set -eu

CNI_BIN_DIR=${CNI_BIN_DIR:-/host/opt/cni/bin}
CNI_NET_DIR=${CNI_NET_DIR:-/host/etc/cni/net.d}
PLUGIN_BINARY=${PLUGIN_BINARY:-/opt/ambit/bin/ambit-cni}
AGENT_SOCKET=${AGENT_SOCKET:-/var/run/ambit/cni.sock}
EXCLUDE_NAMESPACES=${EXCLUDE_NAMESPACES:-kube-system}
AGENT_CONNECT_TIMEOUT_MS=${AGENT_CONNECT_TIMEOUT_MS:-2000}
AGENT_CALL_TIMEOUT_MS=${AGENT_CALL_TIMEOUT_MS:-10000}
PROBE_SNAT=${PROBE_SNAT:-true}
PROBE_SOURCE_V4=${PROBE_SOURCE_V4:-169.254.7.127}
PROBE_SOURCE_V6=${PROBE_SOURCE_V6:-fd16:9254:7127:1337:ffff:ffff:ffff:ffff}
POD_INTERFACES=${POD_INTERFACES:-veth*,cali*,lxc*,cni*}
CHECK_INTERVAL=${CHECK_INTERVAL:-5}
UNINSTALL_ON_EXIT=${UNINSTALL_ON_EXIT:-true}

PLUGIN_TYPE=ambit-cni
NFT_TABLE=ambit_node

log() { echo "install-cni: $*" >&2; }

# The primary configuration: the first .conflist or .conf in lexical order, as the kubelet
# picks it. Prints nothing if there is none yet.
primary_conf() {
  for f in "$CNI_NET_DIR"/*; do
    case "$f" in
      *.conflist | *.conf) [ -f "$f" ] && { echo "$f"; return 0; } ;;
    esac
  done
  return 0
}

# Our chain entry, as JSON.
plugin_entry() {
  jq -n \
    --arg type "$PLUGIN_TYPE" \
    --arg socket "$AGENT_SOCKET" \
    --arg exclude "$EXCLUDE_NAMESPACES" \
    --argjson connect "$AGENT_CONNECT_TIMEOUT_MS" \
    --argjson call "$AGENT_CALL_TIMEOUT_MS" \
    '{type: $type, name: $type, agentSocket: $socket,
      agentConnectTimeoutMs: $connect, agentCallTimeoutMs: $call,
      excludeNamespaces: ($exclude | split(",") | map(select(length > 0)))}'
}

# Replaces $1 with stdin atomically (write beside it, then rename).
write_atomically() {
  tmp="$1.ambit-tmp"
  cat >"$tmp"
  mv -f "$tmp" "$1"
}

install_binary() {
  tmp="$CNI_BIN_DIR/.$PLUGIN_TYPE.tmp"
  cp "$PLUGIN_BINARY" "$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$CNI_BIN_DIR/$PLUGIN_TYPE"
}

# Chains our entry last into the primary configuration (a .conf becomes a .conflist). Returns
# 1 if there is no primary configuration yet.
install_chain() {
  conf=$(primary_conf)
  [ -n "$conf" ] || return 1
  entry=$(plugin_entry)
  case "$conf" in
    *.conf)
      list="${conf%.conf}.conflist"
      jq --argjson entry "$entry" \
        '{cniVersion: .cniVersion, name: .name, plugins: [del(.cniVersion), $entry]}' "$conf" \
        | write_atomically "$list"
      rm -f "$conf"
      log "converted $conf to $list and chained $PLUGIN_TYPE"
      ;;
    *)
      # Already chained, last and up to date: leave the file alone (no needless rewrite).
      if jq -e --argjson entry "$entry" '.plugins[-1] == $entry' "$conf" >/dev/null; then
        return 0
      fi
      jq --argjson entry "$entry" --arg type "$PLUGIN_TYPE" \
        '.plugins = ([.plugins[] | select(.type != $type)] + [$entry])' "$conf" \
        | write_atomically "$conf"
      log "chained $PLUGIN_TYPE into $conf"
      ;;
  esac
}

uninstall_chain() {
  for conf in "$CNI_NET_DIR"/*.conflist; do
    [ -f "$conf" ] || continue
    if jq -e --arg type "$PLUGIN_TYPE" 'any(.plugins[]; .type == $type)' "$conf" >/dev/null; then
      jq --arg type "$PLUGIN_TYPE" '.plugins = [.plugins[] | select(.type != $type)]' "$conf" \
        | write_atomically "$conf"
      log "removed $PLUGIN_TYPE from $conf"
    fi
  done
}

# The nftables script that replaces our table: locally originated TCP (the kubelet's probes)
# leaving through a pod's host-side interface gets the probe source address.
probe_snat_rules() {
  echo "table inet $NFT_TABLE {}"
  echo "delete table inet $NFT_TABLE"
  echo "table inet $NFT_TABLE {"
  echo "  chain postrouting {"
  echo "    type nat hook postrouting priority srcnat; policy accept;"
  old_ifs=$IFS
  IFS=,
  for pattern in $POD_INTERFACES; do
    echo "    meta nfproto ipv4 meta l4proto tcp fib saddr type local oifname \"$pattern\" snat ip to $PROBE_SOURCE_V4"
    echo "    meta nfproto ipv6 meta l4proto tcp fib saddr type local oifname \"$pattern\" snat ip6 to $PROBE_SOURCE_V6"
  done
  IFS=$old_ifs
  echo "  }"
  echo "}"
}

install_probe_snat() {
  [ "$PROBE_SNAT" = true ] || return 0
  probe_snat_rules | nft -f -
  log "kubelet probes SNAT to $PROBE_SOURCE_V4 / $PROBE_SOURCE_V6"
}

uninstall_probe_snat() {
  [ "$PROBE_SNAT" = true ] || return 0
  printf 'table inet %s {}\ndelete table inet %s\n' "$NFT_TABLE" "$NFT_TABLE" | nft -f -
}

install_all() {
  install_binary
  install_probe_snat
  until install_chain; do
    log "no CNI configuration in $CNI_NET_DIR yet; waiting for the primary CNI"
    sleep "$CHECK_INTERVAL"
  done
}

uninstall_all() {
  uninstall_chain
  rm -f "$CNI_BIN_DIR/$PLUGIN_TYPE"
  uninstall_probe_snat
  log "uninstalled"
}

on_exit() {
  # Do not leave the pending sleep behind holding our stdout and stderr.
  [ -z "${sleep_pid:-}" ] || kill "$sleep_pid" 2>/dev/null || true
  if [ "$UNINSTALL_ON_EXIT" = true ]; then
    uninstall_all
  fi
  exit 0
}

case "${1:-run}" in
  install) install_all ;;
  uninstall) uninstall_all ;;
  rules) probe_snat_rules ;;
  run)
    trap on_exit TERM INT
    install_all
    log "installed; checking the chain every ${CHECK_INTERVAL}s"
    while :; do
      # Another CNI may rewrite its configuration and drop our entry: put it back.
      install_chain || log "the primary CNI configuration disappeared"
      sleep "$CHECK_INTERVAL" &
      sleep_pid=$!
      wait "$sleep_pid" || true
    done
    ;;
  *)
    echo "usage: $0 [run|install|uninstall|rules]" >&2
    exit 2
    ;;
esac
