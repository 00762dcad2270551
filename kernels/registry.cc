#include "kernels/codec.h"
#include "kernels/cpu/codecs.h"

namespace kvs {

CodecRegistry CodecRegistry::Builtin() {
  CodecRegistry r;
  r.Register("identity", NewIdentityCodec);
  r.Register("lossless_zstd", NewLosslessZstdCodec);
  r.Register("lossless_lz4", NewLosslessLz4Codec);
  r.Register("fp8_e4m3", NewFp8E4m3Codec);
  r.Register("uniform_int8", NewUniformInt8Codec);
  r.Register("uniform_int4", NewUniformInt4Codec);
  r.Register("kivi_2bit", NewKivi2BitCodec);
  r.Register("kvquant_2bit", NewKvquant2BitCodec);
  r.Register("cachegen", NewCachegenCodec);
  r.Register("palu_lr", NewPaluLrCodec);
  r.Register("topk_prune_50", NewTopkPrune50Codec);
  r.Register("cascade_prune50_int4", NewCascadePrune50Int4Codec);
  r.Register("palu_int4", NewPaluInt4Codec);
  r.Register("mixed_k8v4", NewMixedK8V4Codec);
  return r;
}

}  // namespace kvs
