# Shared by the scripts: the tools the end-to-end tests and the demo need (iptables: the
# capture rules' fallback backend, tested beside nftables).

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "needs root: network namespaces, nftables and tcpdump (try: sudo $0)" >&2
    exit 1
  fi
}

# Installs what is missing (Debian/Ubuntu), or says what to install.
need_tools() {
  local missing=()
  command -v ip >/dev/null || missing+=(iproute2)
  command -v ss >/dev/null || missing+=(iproute2)
  command -v nft >/dev/null || missing+=(nftables)
  command -v iptables-restore >/dev/null || missing+=(iptables)
  command -v tcpdump >/dev/null || missing+=(tcpdump)
  [ ${#missing[@]} -eq 0 ] && return 0
  if command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing tools: ${missing[*]}" >&2
    exit 1
  fi
}
