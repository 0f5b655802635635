/*
 * Per packet, what libtrace hands to libprotoident's lpi_update_data: the
 * transport, the ports from the TCP/UDP header (as update_tcp_flow and
 * update_udp_flow read them), trace_get_payload_length() (the "psize" of the
 * filling rules), TCP sequence number and flags, and the first four payload
 * bytes as trace_get_payload_from_tcp/udp() locate them.  The tests build it with gcc
 * against the real libtrace (Debian libtrace3-dev) when that is installed and
 * compare it with dpicore's decoded packets.
 *
 * Output, one line per packet that has a TCP or UDP header:
 *   NUMBER PROTO SPORT DPORT PSIZE SEQ FLAGS HEX4
 */
#include <libtrace.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CAPTURE.pcap\n", argv[0]);
        return 64;
    }
    char uri[4096];
    snprintf(uri, sizeof(uri), "pcapfile:%s", argv[1]);
    libtrace_t *trace = trace_create(uri);
    if (trace_is_err(trace) || trace_start(trace) == -1) {
        fprintf(stderr, "%s: %s\n", argv[1], trace_get_err(trace).problem);
        return 1;
    }
    libtrace_packet_t *packet = trace_create_packet();
    unsigned long number = 0;
    while (trace_read_packet(trace, packet) > 0) {
        number++;
        uint8_t proto = 0;
        uint32_t rem = 0;
        void *transport = trace_get_transport(packet, &proto, &rem);
        if (transport == NULL || rem == 0 || (proto != 6 && proto != 17))
            continue;
        unsigned char head[4] = {0, 0, 0, 0};
        uint32_t seq = 0;
        unsigned flags = 0, sport = 0, dport = 0;
        void *payload = NULL;
        uint32_t left = rem;
        if (proto == 6) {
            libtrace_tcp_t *tcp = (libtrace_tcp_t *)transport;
            if (rem < sizeof(libtrace_tcp_t))
                continue;
            seq = ntohl(tcp->seq);
            sport = ntohs(tcp->source);
            dport = ntohs(tcp->dest);
            flags = (tcp->fin) | (tcp->syn << 1) | (tcp->rst << 2) | (tcp->psh << 3) | (tcp->ack << 4);
            payload = trace_get_payload_from_tcp(tcp, &left);
        } else {
            if (rem < sizeof(libtrace_udp_t))
                continue;
            libtrace_udp_t *udp = (libtrace_udp_t *)transport;
            sport = ntohs(udp->source);
            dport = ntohs(udp->dest);
            payload = trace_get_payload_from_udp(udp, &left);
        }
        if (payload != NULL)
            memcpy(head, payload, left < 4 ? left : 4);
        printf("%lu %u %u %u %zu %u %u %02x%02x%02x%02x\n", number, (unsigned)proto, sport, dport,
               trace_get_payload_length(packet), seq, flags, head[0], head[1], head[2], head[3]);
    }
    trace_destroy_packet(packet);
    trace_destroy(trace);
    return 0;
}
