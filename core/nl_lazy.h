/* nl_lazy.h — libnl-3 and libnl-route-3, loaded with dlopen the first time riklet opens a netlink
 * socket (core/net.c's nl_open): with --network none, and in every command that sets up no
 * network, they are never loaded (about 0.5 MiB resident: tests/bench/bench_mem.sh). Included by
 * core/net.c after the libnl headers: the libnl calls below then go through the table that
 * rk_nl_load() fills (idempotent; call it before any of them). */
#ifndef RK_NL_LAZY_H
#define RK_NL_LAZY_H

#include <netlink/netlink.h>
#include <netlink/errno.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/addr.h>
#include <netlink/route/route.h>
#include <netlink/route/neighbour.h>
#include "rk.h"

/* every libnl function riklet calls */
#define RK_NL_SYMS(X)                                                                                                  \
	X(nl_addr_build)                                                                                               \
	X(nl_addr_get_binary_addr)                                                                                     \
	X(nl_addr_get_len)                                                                                             \
	X(nl_addr_get_prefixlen)                                                                                       \
	X(nl_addr_put)                                                                                                 \
	X(nl_addr_set_prefixlen)                                                                                       \
	X(nl_cache_free)                                                                                               \
	X(nl_cache_get_first)                                                                                          \
	X(nl_cache_get_next)                                                                                           \
	X(nl_cache_nitems)                                                                                             \
	X(nl_connect)                                                                                                  \
	X(nl_geterror)                                                                                                 \
	X(nl_socket_alloc)                                                                                             \
	X(nl_socket_free)                                                                                              \
	X(nl_send_simple)                                                                                              \
	X(nl_recvmsgs_default)                                                                                         \
	X(nl_socket_modify_cb)                                                                                         \
	X(nl_socket_set_msg_buf_size)                                                                                  \
	X(nlmsg_hdr)                                                                                                   \
	X(nlmsg_data)                                                                                                  \
	X(nlmsg_parse)                                                                                                 \
	X(nla_parse_nested)                                                                                            \
	X(nla_strlcpy)                                                                                                 \
	X(nla_get_u32)                                                                                                 \
	X(nla_data)                                                                                                    \
	X(nla_len)                                                                                                     \
	X(rtnl_addr_add)                                                                                               \
	X(rtnl_addr_alloc)                                                                                             \
	X(rtnl_addr_alloc_cache)                                                                                       \
	X(rtnl_addr_delete)                                                                                            \
	X(rtnl_addr_get_family)                                                                                        \
	X(rtnl_addr_get_ifindex)                                                                                       \
	X(rtnl_addr_get_local)                                                                                         \
	X(rtnl_addr_get_prefixlen)                                                                                     \
	X(rtnl_addr_put)                                                                                               \
	X(rtnl_addr_set_family)                                                                                        \
	X(rtnl_addr_set_ifindex)                                                                                       \
	X(rtnl_addr_set_local)                                                                                         \
	X(rtnl_addr_set_prefixlen)                                                                                     \
	X(rtnl_link_add)                                                                                               \
	X(rtnl_link_alloc)                                                                                             \
	X(rtnl_link_alloc_cache)                                                                                       \
	X(rtnl_link_bridge_alloc)                                                                                      \
	X(rtnl_link_change)                                                                                            \
	X(rtnl_link_delete)                                                                                            \
	X(rtnl_link_get_addr)                                                                                          \
	X(rtnl_link_get_flags)                                                                                         \
	X(rtnl_link_get_ifindex)                                                                                       \
	X(rtnl_link_get_kernel)                                                                                        \
	X(rtnl_link_get_master)                                                                                        \
	X(rtnl_link_get_mtu)                                                                                           \
	X(rtnl_link_get_name)                                                                                          \
	X(rtnl_link_get_type)                                                                                          \
	X(rtnl_link_put)                                                                                               \
	X(rtnl_link_set_flags)                                                                                         \
	X(rtnl_link_set_master)                                                                                        \
	X(rtnl_link_set_mtu)                                                                                           \
	X(rtnl_link_set_name)                                                                                          \
	X(rtnl_link_set_ns_fd)                                                                                         \
	X(rtnl_link_unset_flags)                                                                                       \
	X(rtnl_link_veth_alloc)                                                                                        \
	X(rtnl_link_veth_get_peer)                                                                                     \
	X(rtnl_neigh_alloc)                                                                                            \
	X(rtnl_neigh_delete)                                                                                           \
	X(rtnl_neigh_put)                                                                                              \
	X(rtnl_neigh_set_dst)                                                                                          \
	X(rtnl_neigh_set_family)                                                                                       \
	X(rtnl_neigh_set_ifindex)                                                                                      \
	X(rtnl_route_add)                                                                                              \
	X(rtnl_route_add_nexthop)                                                                                      \
	X(rtnl_route_alloc)                                                                                            \
	X(rtnl_route_alloc_cache)                                                                                      \
	X(rtnl_route_get_dst)                                                                                          \
	X(rtnl_route_get_table)                                                                                        \
	X(rtnl_route_nexthop_n)                                                                                        \
	X(rtnl_route_get_nnexthops)                                                                                    \
	X(rtnl_route_nh_get_gateway)                                                                                   \
	X(rtnl_route_delete)                                                                                           \
	X(rtnl_route_nh_alloc)                                                                                         \
	X(rtnl_route_nh_set_gateway)                                                                                   \
	X(rtnl_route_nh_set_ifindex)                                                                                   \
	X(rtnl_route_put)                                                                                              \
	X(rtnl_route_set_dst)                                                                                          \
	X(rtnl_route_set_family)                                                                                       \
	X(rtnl_route_set_protocol)                                                                                     \
	X(rtnl_route_set_scope)                                                                                        \
	X(rtnl_route_set_table)

struct rk_nl_api {
#define RK_NL_FIELD(f) __typeof__(f) *f;
	RK_NL_SYMS(RK_NL_FIELD)
#undef RK_NL_FIELD
};
extern struct rk_nl_api rk_nl;

/* Load libnl-route-3 (and libnl-3, which it needs). Returns 0, or -1 with e saying what to install. */
int rk_nl_load(rk_err *e);

#ifndef RK_NL_LAZY_IMPL
#define nl_addr_build rk_nl.nl_addr_build
#define nl_addr_get_binary_addr rk_nl.nl_addr_get_binary_addr
#define nl_addr_get_len rk_nl.nl_addr_get_len
#define nl_addr_get_prefixlen rk_nl.nl_addr_get_prefixlen
#define nl_addr_put rk_nl.nl_addr_put
#define nl_addr_set_prefixlen rk_nl.nl_addr_set_prefixlen
#define nl_cache_free rk_nl.nl_cache_free
#define nl_cache_get_first rk_nl.nl_cache_get_first
#define nl_cache_get_next rk_nl.nl_cache_get_next
#define nl_cache_nitems rk_nl.nl_cache_nitems
#define nl_connect rk_nl.nl_connect
#define nl_geterror rk_nl.nl_geterror
#define nl_socket_alloc rk_nl.nl_socket_alloc
#define nl_socket_free rk_nl.nl_socket_free
#define nl_send_simple rk_nl.nl_send_simple
#define nl_recvmsgs_default rk_nl.nl_recvmsgs_default
#define nl_socket_modify_cb rk_nl.nl_socket_modify_cb
#define nl_socket_set_msg_buf_size rk_nl.nl_socket_set_msg_buf_size
#define nlmsg_hdr rk_nl.nlmsg_hdr
#define nlmsg_data rk_nl.nlmsg_data
#define nlmsg_parse rk_nl.nlmsg_parse
#define nla_parse_nested rk_nl.nla_parse_nested
#define nla_strlcpy rk_nl.nla_strlcpy
#define nla_get_u32 rk_nl.nla_get_u32
#define nla_data rk_nl.nla_data
#define nla_len rk_nl.nla_len
#define rtnl_addr_add rk_nl.rtnl_addr_add
#define rtnl_addr_alloc rk_nl.rtnl_addr_alloc
#define rtnl_addr_alloc_cache rk_nl.rtnl_addr_alloc_cache
#define rtnl_addr_delete rk_nl.rtnl_addr_delete
#define rtnl_addr_get_family rk_nl.rtnl_addr_get_family
#define rtnl_addr_get_ifindex rk_nl.rtnl_addr_get_ifindex
#define rtnl_addr_get_local rk_nl.rtnl_addr_get_local
#define rtnl_addr_get_prefixlen rk_nl.rtnl_addr_get_prefixlen
#define rtnl_addr_put rk_nl.rtnl_addr_put
#define rtnl_addr_set_family rk_nl.rtnl_addr_set_family
#define rtnl_addr_set_ifindex rk_nl.rtnl_addr_set_ifindex
#define rtnl_addr_set_local rk_nl.rtnl_addr_set_local
#define rtnl_addr_set_prefixlen rk_nl.rtnl_addr_set_prefixlen
#define rtnl_link_add rk_nl.rtnl_link_add
#define rtnl_link_alloc rk_nl.rtnl_link_alloc
#define rtnl_link_alloc_cache rk_nl.rtnl_link_alloc_cache
#define rtnl_link_bridge_alloc rk_nl.rtnl_link_bridge_alloc
#define rtnl_link_change rk_nl.rtnl_link_change
#define rtnl_link_delete rk_nl.rtnl_link_delete
#define rtnl_link_get_addr rk_nl.rtnl_link_get_addr
#define rtnl_link_get_flags rk_nl.rtnl_link_get_flags
#define rtnl_link_get_ifindex rk_nl.rtnl_link_get_ifindex
#define rtnl_link_get_kernel rk_nl.rtnl_link_get_kernel
#define rtnl_link_get_master rk_nl.rtnl_link_get_master
#define rtnl_link_get_mtu rk_nl.rtnl_link_get_mtu
#define rtnl_link_get_name rk_nl.rtnl_link_get_name
#define rtnl_link_get_type rk_nl.rtnl_link_get_type
#define rtnl_link_put rk_nl.rtnl_link_put
#define rtnl_link_set_flags rk_nl.rtnl_link_set_flags
#define rtnl_link_set_master rk_nl.rtnl_link_set_master
#define rtnl_link_set_mtu rk_nl.rtnl_link_set_mtu
#define rtnl_link_set_name rk_nl.rtnl_link_set_name
#define rtnl_link_set_ns_fd rk_nl.rtnl_link_set_ns_fd
#define rtnl_link_unset_flags rk_nl.rtnl_link_unset_flags
#define rtnl_link_veth_alloc rk_nl.rtnl_link_veth_alloc
#define rtnl_link_veth_get_peer rk_nl.rtnl_link_veth_get_peer
#define rtnl_neigh_alloc rk_nl.rtnl_neigh_alloc
#define rtnl_neigh_delete rk_nl.rtnl_neigh_delete
#define rtnl_neigh_put rk_nl.rtnl_neigh_put
#define rtnl_neigh_set_dst rk_nl.rtnl_neigh_set_dst
#define rtnl_neigh_set_family rk_nl.rtnl_neigh_set_family
#define rtnl_neigh_set_ifindex rk_nl.rtnl_neigh_set_ifindex
#define rtnl_route_add rk_nl.rtnl_route_add
#define rtnl_route_add_nexthop rk_nl.rtnl_route_add_nexthop
#define rtnl_route_alloc rk_nl.rtnl_route_alloc
#define rtnl_route_delete rk_nl.rtnl_route_delete
#define rtnl_route_nh_alloc rk_nl.rtnl_route_nh_alloc
#define rtnl_route_nh_set_gateway rk_nl.rtnl_route_nh_set_gateway
#define rtnl_route_nh_set_ifindex rk_nl.rtnl_route_nh_set_ifindex
#define rtnl_route_put rk_nl.rtnl_route_put
#define rtnl_route_set_dst rk_nl.rtnl_route_set_dst
#define rtnl_route_set_family rk_nl.rtnl_route_set_family
#define rtnl_route_set_protocol rk_nl.rtnl_route_set_protocol
#define rtnl_route_set_scope rk_nl.rtnl_route_set_scope
#define rtnl_route_set_table rk_nl.rtnl_route_set_table
#define rtnl_route_alloc_cache rk_nl.rtnl_route_alloc_cache
#define rtnl_route_get_dst rk_nl.rtnl_route_get_dst
#define rtnl_route_get_table rk_nl.rtnl_route_get_table
#define rtnl_route_nexthop_n rk_nl.rtnl_route_nexthop_n
#define rtnl_route_get_nnexthops rk_nl.rtnl_route_get_nnexthops
#define rtnl_route_nh_get_gateway rk_nl.rtnl_route_nh_get_gateway
#endif

#endif
