import type { SourceObject } from '../../../src/model/build.js';
import { port, slice, svc } from './objects.js';

/**
 * A node converged by kube-proxy in IPVS mode, for `svcplane diff` against kube-proxy's layout.
 * The rules were written from kube-proxy's sources (pkg/proxy/ipvs/proxier.go: writeIptablesRules,
 * ipsetWithIptablesChain, acceptIPVSTraffic, iptablesJumpChain; ipset.go for the set comments) for
 * the state below on node n1 (192.0.2.1, --cluster-cidr 10.244.0.0/16, masquerade bit 14,
 * --random-fully): a set-based rule only for a non-empty set, the `! --physdev-is-in` externalIP
 * ACCEPT, no comment on KUBE-IPVS-FILTER, KUBE-MARK-MASQ and the tail ACCEPTs, the `0x004000` mark,
 * eTP=Local without local endpoints served by the cluster endpoints, none of svcplane's own sets.
 * They were loaded into a User-mode Linux kernel (iptables-restore --noflush, the jumps with
 * `iptables -I` as kube-proxy's EnsureRule(Prepend), ipset restore, ipvsadm -R) and read back with
 * iptables-save (legacy 1.8.9), ipset save (7.17) and ipvsadm -Sn: the texts below are that output.
 */

const LOCAL = { ip: '10.244.0.2', node: 'n1' };
const REMOTE = { ip: '10.244.1.2', node: 'n2' };

export const KUBE_PROXY_IPVS_NODE = { name: 'n1', ip: '192.0.2.1', clusterCIDR: '10.244.0.0/16' } as const;

export const KUBE_PROXY_IPVS_OBJECTS: readonly SourceObject[] = [
  svc('web', { type: 'NodePort', clusterIP: '10.96.0.1', ports: port({ nodePort: 30080 }) }),
  slice('web', [LOCAL, REMOTE]),
  svc('empty', { clusterIP: '10.96.0.3', ports: port() }),
  svc(
    'lb',
    {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.4',
      loadBalancerSourceRanges: ['203.0.113.0/24'],
      ports: port({ nodePort: 30084 }),
    },
    { loadBalancer: { ingress: [{ ip: '198.51.100.10' }] } },
  ),
  slice('lb', [LOCAL, REMOTE]),
  // eTP=Local with its only endpoint on another node.
  svc('local', {
    type: 'NodePort',
    clusterIP: '10.96.0.5',
    externalTrafficPolicy: 'Local',
    ports: port({ nodePort: 30081 }),
  }),
  slice('local', [REMOTE]),
  svc('ext', { clusterIP: '10.96.0.6', externalIPs: ['203.0.113.10'], ports: port() }),
  slice('ext', [LOCAL]),
];

/** iptables-save (legacy) of the node. */
export const KUBE_PROXY_IPVS_IPTABLES = String.raw`*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
-A INPUT -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check rules" -j KUBE-NODE-PORT
-A FORWARD -m comment --comment "kube-proxy firewall rules" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A OUTPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-OUT-FILTER
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable
-A KUBE-IPVS-OUT-FILTER -s 198.51.100.10/32 -m ipvs --vproto 6 --vaddr 198.51.100.10 --vport 80 -j DROP
-A KUBE-NODE-PORT -m comment --comment "Kubernetes health check node port" -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port for load balancer with sourceRange" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL
-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment "Kubernetes service load balancer ip + port + source cidr for packet filter purpose" -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port with externalTrafficPolicy=local" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN
-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-SERVICES -m comment --comment "Kubernetes service lb portal" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER
-A KUBE-SERVICES ! -s 10.244.0.0/16 -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" -m set --match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" -m set --match-set KUBE-EXTERNAL-IP dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m comment --comment "Kubernetes service external ip + port for masquerade and filter purpose" -m set --match-set KUBE-EXTERNAL-IP dst,dst -m addrtype --dst-type LOCAL -j ACCEPT
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT
COMMIT
`;

/** ipset save of the node. */
export const KUBE_PROXY_IPVS_IPSETS = `create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xef94bd71
add KUBE-LOOP-BACK 10.244.0.2,tcp:8080,10.244.0.2
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xa664f125
add KUBE-CLUSTER-IP 10.96.0.5,tcp:80
add KUBE-CLUSTER-IP 10.96.0.1,tcp:80
add KUBE-CLUSTER-IP 10.96.0.3,tcp:80
add KUBE-CLUSTER-IP 10.96.0.6,tcp:80
add KUBE-CLUSTER-IP 10.96.0.4,tcp:80
create KUBE-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x133e9d61
add KUBE-EXTERNAL-IP 203.0.113.10,tcp:80
create KUBE-EXTERNAL-IP-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x472b36aa
create KUBE-LOAD-BALANCER hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x0a7efc71
add KUBE-LOAD-BALANCER 198.51.100.10,tcp:80
create KUBE-LOAD-BALANCER-FW hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x8cc140f9
add KUBE-LOAD-BALANCER-FW 198.51.100.10,tcp:80
create KUBE-LOAD-BALANCER-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xea33598c
create KUBE-LOAD-BALANCER-SOURCE-IP hash:ip,port,ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xde1a259a
create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x657d959d
add KUBE-LOAD-BALANCER-SOURCE-CIDR 198.51.100.10,tcp:80,203.0.113.0/24
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
add KUBE-NODE-PORT-TCP 30080
add KUBE-NODE-PORT-TCP 30081
add KUBE-NODE-PORT-TCP 30084
create KUBE-NODE-PORT-LOCAL-TCP bitmap:port range 0-65535
add KUBE-NODE-PORT-LOCAL-TCP 30081
create KUBE-NODE-PORT-UDP bitmap:port range 0-65535
create KUBE-NODE-PORT-LOCAL-UDP bitmap:port range 0-65535
create KUBE-NODE-PORT-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xa74e782f
create KUBE-NODE-PORT-LOCAL-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x7e8e9789
create KUBE-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535
create KUBE-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x9732eae8
add KUBE-IPVS-IPS 10.96.0.6
add KUBE-IPVS-IPS 203.0.113.10
add KUBE-IPVS-IPS 10.96.0.3
add KUBE-IPVS-IPS 10.96.0.1
add KUBE-IPVS-IPS 10.96.0.5
add KUBE-IPVS-IPS 198.51.100.10
add KUBE-IPVS-IPS 10.96.0.4
`;

/** ipvsadm -Sn of the node. */
export const KUBE_PROXY_IPVS_IPVSADM = `-A -t 192.0.2.1:30080 -s rr
-a -t 192.0.2.1:30080 -r 10.244.0.2:8080 -m -w 1
-a -t 192.0.2.1:30080 -r 10.244.1.2:8080 -m -w 1
-A -t 192.0.2.1:30081 -s rr
-a -t 192.0.2.1:30081 -r 10.244.1.2:8080 -m -w 1
-A -t 192.0.2.1:30084 -s rr
-a -t 192.0.2.1:30084 -r 10.244.0.2:8080 -m -w 1
-a -t 192.0.2.1:30084 -r 10.244.1.2:8080 -m -w 1
-A -t 198.51.100.10:80 -s rr
-a -t 198.51.100.10:80 -r 10.244.0.2:8080 -m -w 1
-a -t 198.51.100.10:80 -r 10.244.1.2:8080 -m -w 1
-A -t 203.0.113.10:80 -s rr
-a -t 203.0.113.10:80 -r 10.244.0.2:8080 -m -w 1
-A -t 10.96.0.1:80 -s rr
-a -t 10.96.0.1:80 -r 10.244.0.2:8080 -m -w 1
-a -t 10.96.0.1:80 -r 10.244.1.2:8080 -m -w 1
-A -t 10.96.0.3:80 -s rr
-A -t 10.96.0.4:80 -s rr
-a -t 10.96.0.4:80 -r 10.244.0.2:8080 -m -w 1
-a -t 10.96.0.4:80 -r 10.244.1.2:8080 -m -w 1
-A -t 10.96.0.5:80 -s rr
-a -t 10.96.0.5:80 -r 10.244.1.2:8080 -m -w 1
-A -t 10.96.0.6:80 -s rr
-a -t 10.96.0.6:80 -r 10.244.0.2:8080 -m -w 1
`;
