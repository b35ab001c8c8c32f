"""nlperf: an eBPF-traced netlink performance lab."""

__version__ = "0.1.0"
