// The simulated board: the Verilated board top (deltarnn.hw.top.BoardTop) and a UART on the other end of its
// serial lines, driven by the host's SimLink (deltarnn.sim.board) over stdin / stdout.
//
// Requests (stdin, little-endian), each answered on stdout as listed:
//   'W' u32 n, n bytes      queue bytes for the board's rx line (sent 8N1, back to back)    -> nothing
//   'R' u32 n, u64 cycles   run until n bytes came from the tx line, or the cycles ran out  -> u64 cycles run,
//                                                                                               u32 k, k bytes
//   'X' u32 cycles          hold the reset input high for that many cycles (a board reset)  -> u64 cycle count
//   'C'                     the cycle count                                                 -> u64 cycle count
//   'Q'                     quit
// argv[1]: clock cycles per bit of the UART (the board top's divisor).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <unistd.h>
#include <vector>

#include "Vtop.h"
#include "verilated.h"

static Vtop *top;
static uint64_t cycles;
static int divisor;

static std::deque<uint8_t> to_board, from_board;
static uint32_t rx_frame;          // bits left of the byte on the rx line: start, 8 data, stop (LSB first)
static int rx_bits, rx_timer;
static int tx_state, tx_timer, tx_bit;
static uint8_t tx_shift;

static void tick(bool reset) {
    if (!rx_bits && !to_board.empty()) {
        rx_frame = (1u << 9) | (uint32_t(to_board.front()) << 1);
        to_board.pop_front();
        rx_bits = 10;
        rx_timer = divisor;
    }
    top->rx = rx_bits ? (rx_frame & 1) : 1;
    top->rst = reset;
    top->clk = 0;
    top->eval();
    top->clk = 1;
    top->eval();
    cycles++;
    if (rx_bits && --rx_timer == 0) {
        rx_frame >>= 1;
        rx_bits--;
        rx_timer = divisor;
    }
    int line = top->tx;                      // sample the tx line in the middle of each bit
    switch (tx_state) {
    case 0:                                  // idle: a falling edge starts a byte
        if (!line) {
            tx_state = 1;
            tx_timer = divisor + divisor / 2;
            tx_bit = 0;
            tx_shift = 0;
        }
        break;
    case 1:
        if (--tx_timer == 0) {
            tx_timer = divisor;
            if (tx_bit < 8) {
                tx_shift |= uint8_t(line << tx_bit++);
            } else {                         // the stop bit: a byte, or a framing error
                if (line) from_board.push_back(tx_shift);
                tx_state = line ? 0 : 2;
            }
        }
        break;
    default:                                 // after a framing error: wait for the idle line
        if (line) tx_state = 0;
    }
}

static void get(void *buf, size_t n) {
    uint8_t *p = static_cast<uint8_t *>(buf);
    while (n) {
        ssize_t got = read(0, p, n);
        if (got <= 0) exit(0);               // the host went away
        p += got;
        n -= size_t(got);
    }
}

static void put(const void *buf, size_t n) {
    const uint8_t *p = static_cast<const uint8_t *>(buf);
    while (n) {
        ssize_t done = write(1, p, n);
        if (done <= 0) exit(1);
        p += done;
        n -= size_t(done);
    }
}

int main(int argc, char **argv) {
    if (argc < 2 || (divisor = atoi(argv[1])) < 1) {
        fprintf(stderr, "usage: %s DIVISOR\n", argv[0]);
        return 2;
    }
    VerilatedContext context;
    top = new Vtop{&context};
    top->rx = 1;
    tick(true);
    tick(false);
    for (;;) {
        char op;
        get(&op, 1);
        if (op == 'W') {
            uint32_t n;
            get(&n, 4);
            std::vector<uint8_t> data(n);
            get(data.data(), n);
            to_board.insert(to_board.end(), data.begin(), data.end());
        } else if (op == 'R') {
            uint32_t want;
            uint64_t limit, ran = 0;
            get(&want, 4);
            get(&limit, 8);
            while (from_board.size() < want && ran < limit) {
                tick(false);
                ran++;
            }
            uint32_t k = uint32_t(from_board.size() < want ? from_board.size() : want);
            std::vector<uint8_t> data(from_board.begin(), from_board.begin() + k);
            from_board.erase(from_board.begin(), from_board.begin() + k);
            put(&ran, 8);
            put(&k, 4);
            put(data.data(), k);
        } else if (op == 'X') {
            uint32_t n;
            get(&n, 4);
            for (uint32_t i = 0; i < n; i++) tick(true);
            put(&cycles, 8);
        } else if (op == 'C') {
            put(&cycles, 8);
        } else if (op == 'Q') {
            break;
        } else {
            fprintf(stderr, "board harness: unknown request %d\n", op);
            return 2;
        }
    }
    top->final();
    delete top;
    return 0;
}
