// bench/codecs/codecs_bench.h — `kvs-bench codecs`: per codec, encode and decode throughput in
// uncompressed GB/s on 1 thread and on all threads, beside a memcpy of the same bytes measured in
// the same run, plus compression ratio (every payload byte counted) and key/value cosine.
#pragma once

namespace kvs::bench {

int RunCodecsBench(int argc, char** argv);

}  // namespace kvs::bench
