// bench/quality/quality_bench.h — `kvs-bench quality`: end-to-end quality of every codec on a
// real model, by the KVShuttle paper's protocol (CODECS.md §4) plus free-running generation.
//
// For N prompts drawn reproducibly from a text file (default: the committed WikiText-2 test
// excerpt; rows of 4*min..4*max characters, as the paper filters), each chat-templated when the
// model has a template: prefill, export the prompt's KV as fp16 [L,H,S,D], and for every codec
// encode -> decode -> inject. Per codec and prompt it records the compression ratio (all payload
// bytes), per-layer key/value cosine and MSE over the full prompt, teacher-forced token agreement
// and Δppl over the continuation after an 80 % split (at least 10 tokens; the full cache is
// compressed, then cut to the prefix), and greedy agreement of 64 free-running tokens decoded from
// the reconstructed full-prompt cache. Pruning codecs mask evicted positions (or zero-fill them,
// --prune-fill zero, as the reference did). Means with percentile-bootstrap 95 % intervals; a
// table on stdout, --json for machines. --perplexity-windows N also reports plain perplexity of
// the text over N windows.
//
//   kvs-bench quality --model models/SmolLM2-135M-Instruct.Q4_1.gguf --prompts 20 --json out.json
#pragma once

namespace kvs::bench {

int RunQualityBench(int argc, char** argv);

}  // namespace kvs::bench
