// The compressed-domain reader: motion vectors rasterized to a block grid,
// residuals, RGB frames, CoViAR accumulation, GOP-parallel decoding.
//
// Conventions (see ARCHITECTURE.md):
//   mv      (T, 2, Hb, Wb) float32, Hb = ceil(H / block), pixels, codec
//           direction src - dst: the content of a block of frame t at x is
//           found at x + mv(x) in its reference frame.
//   mask    (T, Hb, Wb) uint8, 1 where a coded vector of the selected list
//           covers the cell.
//   frame types: 0 = I, 1 = P, 2 = B.
//   residual (T, 3, H, W) int16, RGB.
//   rgb     (K, 3, H, W) uint8.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ffmpeg_util.h"
#include "pixels.h"

namespace mvaccel::video {

enum FrameType : uint8_t { kI = 0, kP = 1, kB = 2 };
enum RgbMode : int { kRgbNone = 0, kRgbIFrames = 1, kRgbAll = 2 };
enum FillMode : int { kFillPrevious = 0, kFillZero = 1 };

// One packet of the video stream, in demux order (packets without data are
// left out: they carry no frame).
struct PacketInfo {
  int64_t pts = AV_NOPTS_VALUE;
  int64_t dts = AV_NOPTS_VALUE;
  int64_t pos = -1;
  bool key = false;
};

// What a demux-only pass learns: packets and where decoding may start.
struct PacketIndex {
  std::vector<PacketInfo> packets;
  std::vector<int64_t> key_packets;  // ordinals into packets
  // Whether every chunk [key_i, key_{i+1}) decodes on its own: no packet
  // after a key packet shows an earlier pts (open GOP), timestamps known.
  bool chunks_independent = true;
  // Display-order number of every packet's frame: the rank of its pts where
  // every packet has a distinct pts (MP4, MKV, TS), else its demux ordinal
  // (AVI: frames follow packets, packed B-frames included).
  std::vector<int64_t> display;
  // suffix_min_display[p] = min(display[p:]): non-decreasing, so the last
  // packet shown before a frame is a binary search away.
  std::vector<int64_t> suffix_min_display;
  bool by_pts = false;
  // The stream may reorder frames (B-frames: the codec's delay, or pts out
  // of decode order). A GOP read of such a stream starts one GOP early where
  // the decoder carries state across key frames (MPEG-4 part 2 family:
  // B-frames after an I-frame depend on the frames before it), where the GOP
  // is open (H.264 open GOPs decode differently after a seek), and where no
  // timestamps tell (AVI). Closed H.264 GOPs and MPEG-1/2 decode exactly from
  // their own key frame (tested).
  bool reorder = false;
  bool state_across_keys = false;
  std::vector<bool> open_gop;  // per key: packets after it are shown before it
  // Display-order number of each key packet's frame: GOP k is the display
  // frames [key_display[k], key_display[k + 1]).
  std::vector<int64_t> key_display;
};

struct StreamInfo {
  std::string codec;
  std::string codec_long;
  int width = 0;
  int height = 0;
  double fps = 0;
  int time_base_num = 0;
  int time_base_den = 1;
  double duration = 0;  // seconds, from the container (0 when unknown)
  bool exports_mvs = false;
  bool intra_only = false;
};

struct ProbeResult {
  StreamInfo info;
  int64_t num_packets = 0;
  std::vector<int64_t> key_packets;
  std::vector<int64_t> key_frames;  // display-order frame of each key packet
  bool chunks_independent = true;
  bool decoded = false;  // frame types and pts below are filled
  std::vector<uint8_t> frame_types;
  std::vector<int64_t> pts;
};

struct ReadOptions {
  int block = 8;
  bool residual = false;
  int rgb = kRgbNone;
  bool accumulate = false;
  int fill_iframe = kFillPrevious;
  int b_list = 0;    // 0 = past (list 0), 1 = future (list 1)
  int threads = 1;   // GOP-parallel decoding
  bool fast = true;  // skip_loop_filter/skip_idct when no pixels are needed
  std::vector<int64_t> frames;  // display-order indices; empty = all
};

struct ClipResult {
  int64_t T = 0;
  int H = 0, W = 0, Hb = 0, Wb = 0, block = 8;
  int64_t total_decoded = 0;  // frames decoded (display order prefix)
  std::vector<float> mv;
  std::vector<uint8_t> mask;
  std::vector<uint8_t> frame_type;
  std::vector<int64_t> pts;
  std::vector<int64_t> gop_index;
  std::vector<int64_t> frame_index;
  std::vector<uint8_t> corrupt;  // FFmpeg flagged a decoding error
  Pixels<int16_t> residual;      // (T, 3, H, W) when asked
  Pixels<uint8_t> rgb;           // (K, 3, H, W) when asked
  std::vector<int64_t> rgb_index;
  bool parallel_used = false;
  StreamInfo info;
};

ProbeResult probe(const std::string& path, bool decode);

// Every display-order frame of the stream (frames empty) or the listed ones.
ClipResult read_clip(const std::string& path, const ReadOptions& opt);

// GOP random access: the packet index is built once (a demux pass, no
// decoding); read() seeks to a key frame and decodes only what the GOPs
// asked for need. GOP k is the display-order frames [key_frames[k],
// key_frames[k + 1]) (open GOPs: the leading B-frames decoded after key
// k + 1 belong to GOP k). Output equals a decode from the start of the file:
// streams with B-frames start one GOP early, and a read whose frames do not
// pair up with the index decodes from the start. Thread-safe (one read at a
// time). Frame indices in read()'s options count from the first GOP's first
// frame.
class GopReader {
 public:
  explicit GopReader(const std::string& path);
  ~GopReader();
  GopReader(const GopReader&) = delete;
  GopReader& operator=(const GopReader&) = delete;

  const StreamInfo& info() const;
  const std::vector<int64_t>& key_packets() const;
  // Display-order frame number where each GOP starts (its key frame).
  const std::vector<int64_t>& key_frames() const;
  int64_t num_packets() const;
  ClipResult read(int64_t first_chunk, int64_t last_chunk,
                  const ReadOptions& opt);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mvaccel::video
