// Package dnsproxy is the DNS answer path of clawnet's agents: bytes of a
// query from an agent in, a reply and the addresses to bind out. It parses
// and checks the query, decides its name with the agent's policy, asks an
// upstream for an allowed A or AAAA, filters the answer and adds Extended
// DNS Errors, and keeps upstream answers and failures for the next agent
// asking the same name and type; and it holds each agent's name bindings
// (NameTable), the IP → name facts those answers leave behind for the
// agent's flows.
//
// The gateway keeps the per-agent glue around it: the port-53 hooks of the
// agent's netstack, rate limits and in-flight bounds, the audit lines and
// the transport. It runs the steps one by one (ParseQuery, Query.Decide,
// Answerer.Cached, Answerer.Resolve) with its limits in between; tests and
// the fuzz targets run them at once with Answerer.Answer.
//
// What it answers (docs/dns.md says the same for users):
//   - Not a query (QR set), or under 12 bytes: dropped, never answered, so
//     answers cannot be reflected into a loop.
//   - Unparseable, larger than MaxQuery, more or less than one question,
//     records in the answer or authority section, anything but one OPT in
//     the additional section, a name that is not a hostname: FORMERR.
//   - Opcode other than QUERY: NOTIMP. EDNS version other than 0: BADVERS.
//   - Class other than IN, the root name: REFUSED.
//   - A name the agent's policy does not allow: NXDOMAIN with Extended DNS
//     Error 15 (Blocked) "blocked by clawnet policy". Nothing goes upstream.
//   - An allowed name with a type other than A or AAAA (TXT, MX, SRV, PTR,
//     ANY, AXFR, HTTPS, SVCB, ...): REFUSED with Extended DNS Error 21 (Not
//     Supported). Nothing goes upstream. Refusing HTTPS/SVCB keeps ECH
//     configs and address hints (which would bypass the A/AAAA filter) away
//     from the agent; clients fall back to A/AAAA.
//   - An allowed A or AAAA: asked upstream (only the normalized name and
//     type: none of the agent's flags or EDNS options travel), the CNAME
//     chain followed inside that one answer, special-purpose addresses
//     removed, the rest bound to the queried name and returned as records
//     of the queried name (the chain is flattened). See Answerer.Resolve.
//     What the upstream said is kept, filtered, for the next agent whose
//     policy allows the name: the cache never decides.
//   - An allowed A or AAAA the upstream failed a moment ago: SERVFAIL at
//     once, with Extended DNS Error 23 (Network Error).
//
// What it must never do: import gVisor, the netstack, tun, the container
// client or the gateway (a test checks); know about agents beyond the
// policy and the name table it is handed; answer from its cache a query
// the agent's policy has not allowed; or do I/O other than the
// upstream exchange its Exchanger makes (Upstream, the real one, also reads
// the host's resolv.conf). Everything else is a function of the query, the
// policy and the upstream's answers (now, or kept from before), so it is
// tested and fuzzed without a network.
package dnsproxy
