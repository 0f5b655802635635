/*
 * lpi_reference: what libprotoident itself says about each flow of some
 * captures, fed through its own lpi_update_data (libtrace packets).
 *
 * This is the yardstick for dpi-lpi, which fills lpi_data_t without libtrace:
 * benchmarks/agreement.py builds this program against the installed
 * libprotoident and libtrace and compares its answers with the layer's.
 *
 *   g++ -O2 -o lpi_reference lpi_reference.cc -lprotoident -ltrace
 *   ./lpi_reference a.pcap b.pcap > reference.jsonl
 *
 * Flows are bidirectional 5-tuples (no timeouts: one flow per 5-tuple and
 * capture); direction 0 is the sender of the flow's first packet, or the
 * receiver when that packet is a SYN/ACK - the rule dpicore's flow table
 * uses.  One JSON object per flow on stdout:
 *   {"file": ..., "proto": 6, "client": "10.0.0.1", "client_port": 40000,
 *    "server": "10.0.0.2", "server_port": 80, "lpi": "HTTP", "category": "Web"}
 */
#include <libtrace.h>
#include <libprotoident.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

typedef std::pair<std::string, uint16_t> Endpoint;
typedef std::tuple<uint8_t, Endpoint, Endpoint> FlowKey;

struct Flow {
    uint8_t proto;
    Endpoint client;
    Endpoint server;
    lpi_data_t lpi;
};

static std::string address(struct sockaddr *sa) {
    char buf[INET6_ADDRSTRLEN] = "";
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, buf, sizeof(buf));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, buf, sizeof(buf));
    return std::string(buf);
}

static std::string json_string(const std::string &text) {
    std::string out = "\"";
    for (char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if ((unsigned char)c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof(esc), "\\u%04x", (unsigned char)c);
            out += esc;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

static int classify_file(const char *path) {
    std::string uri = std::string("pcapfile:") + path;
    libtrace_t *trace = trace_create(uri.c_str());
    if (trace_is_err(trace)) {
        libtrace_err_t err = trace_get_err(trace);
        fprintf(stderr, "%s: %s\n", path, err.problem);
        trace_destroy(trace);
        return 1;
    }
    if (trace_start(trace) == -1) {
        libtrace_err_t err = trace_get_err(trace);
        fprintf(stderr, "%s: %s\n", path, err.problem);
        trace_destroy(trace);
        return 1;
    }
    libtrace_packet_t *packet = trace_create_packet();
    std::map<FlowKey, size_t> index;
    std::vector<Flow> flows;

    while (trace_read_packet(trace, packet) > 0) {
        uint8_t proto = 0;
        uint32_t rem = 0;
        if (trace_get_transport(packet, &proto, &rem) == NULL || (proto != 6 && proto != 17))
            continue;
        struct sockaddr_storage src_ss, dst_ss;
        if (trace_get_source_address(packet, (struct sockaddr *)&src_ss) == NULL ||
                trace_get_destination_address(packet, (struct sockaddr *)&dst_ss) == NULL)
            continue;
        Endpoint src(address((struct sockaddr *)&src_ss), trace_get_source_port(packet));
        Endpoint dst(address((struct sockaddr *)&dst_ss), trace_get_destination_port(packet));
        FlowKey key = src < dst ? FlowKey(proto, src, dst) : FlowKey(proto, dst, src);

        std::map<FlowKey, size_t>::iterator it = index.find(key);
        if (it == index.end()) {
            Flow flow;
            flow.proto = proto;
            flow.client = src;
            flow.server = dst;
            libtrace_tcp_t *tcp = proto == 6 ? trace_get_tcp(packet) : NULL;
            if (tcp != NULL && tcp->syn && tcp->ack) {
                flow.client = dst;
                flow.server = src;
            }
            lpi_init_data(&flow.lpi);
            it = index.insert(std::make_pair(key, flows.size())).first;
            flows.push_back(flow);
        }
        Flow &flow = flows[it->second];
        uint8_t dir = src == flow.client ? 0 : 1;
        lpi_update_data(packet, &flow.lpi, dir);
    }
    if (trace_is_err(trace)) {
        libtrace_err_t err = trace_get_err(trace);
        fprintf(stderr, "%s: %s\n", path, err.problem);
    }
    trace_destroy_packet(packet);
    trace_destroy(trace);

    for (size_t i = 0; i < flows.size(); i++) {
        Flow &flow = flows[i];
        lpi_module_t *module = lpi_guess_protocol(&flow.lpi);
        if (module == NULL)
            return 2;
        printf("{\"file\": %s, \"proto\": %u, \"client\": %s, \"client_port\": %u, \"server\": %s, "
               "\"server_port\": %u, \"lpi\": %s, \"category\": %s}\n",
               json_string(path).c_str(), (unsigned)flow.proto, json_string(flow.client.first).c_str(),
               (unsigned)flow.client.second, json_string(flow.server.first).c_str(),
               (unsigned)flow.server.second, json_string(module->name).c_str(),
               json_string(lpi_print_category(module->category)).c_str());
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CAPTURE...\n", argv[0]);
        return 64;
    }
    if (lpi_init_library() == -1) {
        fprintf(stderr, "lpi_init_library failed\n");
        return 2;
    }
    int failed = 0;
    for (int i = 1; i < argc; i++)
        failed |= classify_file(argv[i]);
    lpi_free_library();
    return failed;
}
