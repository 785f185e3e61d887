// See reader.h. The per-frame work happens in FrameProcessor, which receives
// decoded frames in display order for one chunk of the stream (a run of
// packets that starts at a key frame), so chunks decode on separate threads.
#include "reader.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

namespace mvaccel::video {

namespace {

// ---- FFmpeg log: keep the last error line of this thread for exceptions ----

thread_local std::string g_last_log;
bool g_verbose = false;

void log_callback(void* avcl, int level, const char* fmt, va_list vl) {
  if (g_verbose) {
    va_list copy;
    va_copy(copy, vl);
    av_log_default_callback(avcl, level, fmt, copy);
    va_end(copy);
  }
  if (level > AV_LOG_ERROR) return;
  char line[1024];
  int print_prefix = 1;
  av_log_format_line2(avcl, level, fmt, vl, line, sizeof(line), &print_prefix);
  std::string s(line);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (!s.empty()) g_last_log = s;
}

struct LogSetup {
  LogSetup() {
    const char* v = std::getenv("MVACCEL_FFMPEG_LOG");
    g_verbose = v != nullptr && v[0] != '\0' && v[0] != '0';
    av_log_set_callback(log_callback);
  }
};

void ensure_log_setup() { static LogSetup setup; }

std::string ffmpeg_message(int err) {
  std::string m = av_error_string(err);
  if (!g_last_log.empty()) m += " (FFmpeg: " + g_last_log + ")";
  return m;
}

// ---- codec facts ----

bool codec_exports_mvs(AVCodecID id) {
  switch (id) {
    case AV_CODEC_ID_H264:
    case AV_CODEC_ID_MPEG4:
    case AV_CODEC_ID_MPEG1VIDEO:
    case AV_CODEC_ID_MPEG2VIDEO:
    case AV_CODEC_ID_H263:
    case AV_CODEC_ID_H263P:
    case AV_CODEC_ID_FLV1:
    case AV_CODEC_ID_MSMPEG4V2:
    case AV_CODEC_ID_MSMPEG4V3:
    case AV_CODEC_ID_WMV1:
    case AV_CODEC_ID_WMV2:
      return true;
    default:
      return false;
  }
}

uint8_t frame_type_code(AVPictureType t) {
  switch (t) {
    case AV_PICTURE_TYPE_B:
    case AV_PICTURE_TYPE_BI:
      return kB;
    case AV_PICTURE_TYPE_P:
    case AV_PICTURE_TYPE_S:
    case AV_PICTURE_TYPE_SP:
      return kP;
    default:
      return kI;
  }
}

// ---- input ----

class Input {
 public:
  explicit Input(std::string path) : path_(std::move(path)) { open(); }

  void open() {
    ensure_log_setup();
    g_last_log.clear();
    fmt_.reset();
    AVFormatContext* raw = nullptr;
    int err = avformat_open_input(&raw, path_.c_str(), nullptr, nullptr);
    if (err < 0) {
      if (err == AVERROR(ENOENT))
        throw MissingFileError(path_ + ": no such file");
      throw VideoError(path_ +
                       ": cannot open as a video: " + ffmpeg_message(err));
    }
    fmt_.reset(raw);
    err = avformat_find_stream_info(raw, nullptr);
    if (err < 0)
      throw VideoError(path_ +
                       ": cannot read stream info: " + ffmpeg_message(err));
    stream_index_ = -1;
    for (unsigned i = 0; i < raw->nb_streams; ++i) {
      AVStream* s = raw->streams[i];
      if (s->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
          !(s->disposition & AV_DISPOSITION_ATTACHED_PIC)) {
        stream_index_ = static_cast<int>(i);
        break;
      }
    }
    if (stream_index_ < 0)
      throw VideoError(path_ + ": no video stream (" +
                       std::to_string(raw->nb_streams) +
                       " streams, none of them video)");
    AVCodecParameters* par = stream()->codecpar;
    if (par->width <= 0 || par->height <= 0)
      throw VideoError(path_ + ": video stream has no frame size (" +
                       std::to_string(par->width) + "x" +
                       std::to_string(par->height) + ")");
    index_entries_ = avformat_index_get_entries_count(stream());
    fresh_ = true;
  }

  int64_t index_entries_at_open() const { return index_entries_; }

  AVFormatContext* fmt() const { return fmt_.get(); }
  AVStream* stream() const { return fmt_->streams[stream_index_]; }
  int stream_index() const { return stream_index_; }
  const std::string& path() const { return path_; }
  bool fresh() const { return fresh_; }
  void touched() { fresh_ = false; }

  StreamInfo info() const {
    StreamInfo s;
    AVStream* st = stream();
    AVCodecParameters* par = st->codecpar;
    s.codec = avcodec_get_name(par->codec_id);
    const AVCodecDescriptor* d = avcodec_descriptor_get(par->codec_id);
    s.codec_long = d && d->long_name ? d->long_name : s.codec;
    s.intra_only = d && (d->props & AV_CODEC_PROP_INTRA_ONLY);
    s.exports_mvs = codec_exports_mvs(par->codec_id);
    s.width = par->width;
    s.height = par->height;
    AVRational r =
        st->avg_frame_rate.num > 0 ? st->avg_frame_rate : st->r_frame_rate;
    s.fps = r.den > 0 ? av_q2d(r) : 0.0;
    s.time_base_num = st->time_base.num;
    s.time_base_den = st->time_base.den;
    if (st->duration != AV_NOPTS_VALUE && st->duration > 0)
      s.duration = st->duration * av_q2d(st->time_base);
    else if (fmt_->duration != AV_NOPTS_VALUE && fmt_->duration > 0)
      s.duration = fmt_->duration / static_cast<double>(AV_TIME_BASE);
    return s;
  }

 private:
  std::string path_;
  FormatPtr fmt_;
  int stream_index_ = -1;
  int64_t index_entries_ = 0;
  bool fresh_ = true;
};

CodecPtr open_decoder(const Input& in, bool export_mvs, bool fast) {
  AVCodecParameters* par = in.stream()->codecpar;
  const AVCodec* codec = avcodec_find_decoder(par->codec_id);
  if (codec == nullptr)
    throw VideoError(in.path() + ": this FFmpeg has no decoder for codec '" +
                     avcodec_get_name(par->codec_id) + "'");
  CodecPtr ctx(avcodec_alloc_context3(codec));
  if (!ctx) throw std::bad_alloc();
  int err = avcodec_parameters_to_context(ctx.get(), par);
  if (err < 0)
    throw VideoError(in.path() +
                     ": bad codec parameters: " + ffmpeg_message(err));
  // One thread per decoder: frame threads make H.264 B-frame vectors change
  // from run to run. Parallelism comes from decoding chunks separately.
  ctx->thread_count = 1;
  ctx->thread_type = 0;
  ctx->pkt_timebase = in.stream()->time_base;
  if (export_mvs) ctx->export_side_data |= AV_CODEC_EXPORT_DATA_MVS;
  if (fast) {
    // Vectors do not depend on the loop filter or the inverse transform
    // (python_tests/test_video.py checks bit-identity on both codecs).
    ctx->skip_loop_filter = AVDISCARD_ALL;
    ctx->skip_idct = AVDISCARD_ALL;
    // MPEG-1/2/4 and H.263 decoders can motion-compensate at 1/8 size; the
    // vectors are parsed and exported at full resolution all the same (the
    // same test checks it), at a third of the decoding time.
    ctx->lowres = std::min(3, static_cast<int>(codec->max_lowres));
  }
  err = avcodec_open2(ctx.get(), codec, nullptr);
  if (err < 0)
    throw VideoError(in.path() + ": cannot open the " +
                     avcodec_get_name(par->codec_id) +
                     " decoder: " + ffmpeg_message(err));
  return ctx;
}

// Where a stream's packets end: the largest pts + duration seen (stream
// time base), to compare with the duration the container declares.
// A packet without a duration (FLV) counts for one frame.
struct PacketSpan {
  int64_t end = AV_NOPTS_VALUE;
  bool end_timed = true;  // the last packet had a duration
  void add(const AVPacket* p) {
    int64_t t = p->pts != AV_NOPTS_VALUE ? p->pts : p->dts;
    if (t == AV_NOPTS_VALUE) return;
    t += std::max<int64_t>(p->duration, 0);
    if (end == AV_NOPTS_VALUE || t > end) {
      end = t;
      end_timed = p->duration > 0;
    }
  }
};

// A file cut short or damaged. Where the container's index was read at open
// time (an MP4 sample table, an AVI idx1 at the end of the file), every
// indexed packet must arrive; when the file is long enough to hold them, it
// is damaged rather than truncated. Otherwise the header's frame count must
// be met (one frame of slack: muxers count a leading timestamp gap as a
// frame), or, without one (MKV, WebM), the packets must last the duration
// the header declares (3/4 of a frame of slack: the tag is rounded).
void check_complete(const Input& in, int64_t packets_seen,
                    const PacketSpan& span) {
  AVStream* st = in.stream();
  const int64_t indexed = in.index_entries_at_open();
  const int64_t declared = st->nb_frames;
  std::string what;
  if (indexed > 1) {
    if (packets_seen < indexed) {
      const AVIndexEntry* last = avformat_index_get_entry(st, indexed - 1);
      const int64_t size = in.fmt()->pb ? avio_size(in.fmt()->pb) : -1;
      if (last != nullptr && size > 0 && last->pos >= 0 && last->pos < size)
        throw VideoError(in.path() + ": the file is damaged: its index lists " +
                         std::to_string(indexed) +
                         " video frames and the file is long enough to hold "
                         "them, but reading stopped after " +
                         std::to_string(packets_seen) +
                         " (a corrupt chunk header or packet)");
      what = "its index lists " + std::to_string(indexed);
    }
  } else if (declared > 0) {
    if (packets_seen + 1 < declared)
      what = "the container declares " + std::to_string(declared);
  } else if (span.end != AV_NOPTS_VALUE) {
    const double tb = av_q2d(st->time_base);
    // The video stream's own duration: the stream's, the DURATION tag
    // FFmpeg's MKV muxer writes per track, or the file's when it holds no
    // other stream (an audio track may outlast the video).
    double dur = 0;
    const AVDictionaryEntry* tag =
        av_dict_get(st->metadata, "DURATION", nullptr, 0);
    int hh = 0, mm = 0;
    double ss = 0;
    if (st->duration != AV_NOPTS_VALUE && st->duration > 0)
      dur = st->duration * tb;
    else if (tag && std::sscanf(tag->value, "%d:%d:%lf", &hh, &mm, &ss) == 3)
      dur = hh * 3600.0 + mm * 60.0 + ss;
    else if (in.fmt()->nb_streams == 1 &&
             in.fmt()->duration != AV_NOPTS_VALUE && in.fmt()->duration > 0)
      dur = in.fmt()->duration / static_cast<double>(AV_TIME_BASE);
    const int64_t start = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
    AVRational r =
        st->avg_frame_rate.num > 0 ? st->avg_frame_rate : st->r_frame_rate;
    const double frame = r.num > 0 && r.den > 0 ? av_q2d(av_inv_q(r)) : 0.04;
    const double got = (span.end - start) * tb + (span.end_timed ? 0 : frame);
    if (dur > 0 && got < dur - 0.75 * frame) {
      char buf[160];
      std::snprintf(buf, sizeof(buf),
                    ": the file is truncated: the container declares %.3f s "
                    "of video, its packets end at %.3f s (%lld frames)",
                    dur, got, static_cast<long long>(packets_seen));
      throw VideoError(in.path() + buf);
    }
  }
  if (!what.empty())
    throw VideoError(in.path() + ": the file is truncated: " + what +
                     " video frames, the file holds " +
                     std::to_string(packets_seen));
}

// Fills idx->display, by_pts, reorder and key_display (see reader.h).
void index_display_order(const Input& in, PacketIndex* idx) {
  const auto& pk = idx->packets;
  const int64_t n = static_cast<int64_t>(pk.size());
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  bool by_pts = n > 0;
  for (const auto& p : pk)
    if (p.pts == AV_NOPTS_VALUE) by_pts = false;
  if (by_pts) {
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return pk[a].pts < pk[b].pts;
    });
    for (int64_t i = 1; i < n && by_pts; ++i)
      if (pk[order[i]].pts == pk[order[i - 1]].pts) by_pts = false;
  }
  idx->display.assign(n, 0);
  bool reorder = false;
  for (int64_t i = 0; i < n; ++i) {
    if (by_pts)
      idx->display[order[i]] = i;
    else
      idx->display[i] = i;
  }
  for (int64_t i = 0; i < n; ++i)
    if (idx->display[i] != i) reorder = true;
  idx->key_display.clear();
  for (int64_t k : idx->key_packets)
    idx->key_display.push_back(idx->display[k]);
  // GOP 0 holds whatever is shown before the second key frame.
  if (!idx->key_display.empty()) idx->key_display[0] = 0;
  for (size_t k = 1; by_pts && k < idx->key_display.size(); ++k)
    if (idx->key_display[k] <= idx->key_display[k - 1]) by_pts = false;
  if (!by_pts && reorder) {
    // Keys not in display order: fall back to demux ordinals (checked
    // against the decoded frames at read time).
    for (int64_t i = 0; i < n; ++i) idx->display[i] = i;
    for (size_t k = 0; k < idx->key_packets.size(); ++k)
      idx->key_display[k] = k == 0 ? 0 : idx->key_packets[k];
  }
  idx->by_pts = by_pts;
  idx->reorder = reorder || in.stream()->codecpar->video_delay > 0;
  idx->suffix_min_display.assign(n, 0);
  for (int64_t i = n - 1, m = INT64_MAX; i >= 0; --i)
    idx->suffix_min_display[i] = m = std::min(m, idx->display[i]);
  // Open GOPs: a packet of the chunk is shown before its key frame.
  const int64_t K = static_cast<int64_t>(idx->key_packets.size());
  idx->open_gop.assign(K, false);
  for (int64_t k = 1; by_pts && k < K; ++k) {
    const int64_t b = k + 1 < K ? idx->key_packets[k + 1] : n;
    for (int64_t p = idx->key_packets[k] + 1; p < b; ++p)
      if (idx->display[p] < idx->key_display[k]) idx->open_gop[k] = true;
  }
  switch (in.stream()->codecpar->codec_id) {
    case AV_CODEC_ID_MPEG4:
    case AV_CODEC_ID_MSMPEG4V1:
    case AV_CODEC_ID_MSMPEG4V2:
    case AV_CODEC_ID_MSMPEG4V3:
    case AV_CODEC_ID_H263:
    case AV_CODEC_ID_H263P:
    case AV_CODEC_ID_H263I:
    case AV_CODEC_ID_FLV1:
    case AV_CODEC_ID_WMV1:
    case AV_CODEC_ID_WMV2:
      idx->state_across_keys = true;
      break;
    default:
      idx->state_across_keys = false;
  }
}

PacketIndex scan_packets(Input& in) {
  PacketIndex idx;
  if (!in.fresh()) in.open();
  in.touched();
  PacketPtr pkt(av_packet_alloc());
  int err;
  int64_t seen = 0;
  PacketSpan span;
  while ((err = av_read_frame(in.fmt(), pkt.get())) >= 0) {
    PacketRef ref(pkt.get());
    if (pkt->stream_index != in.stream_index()) continue;
    ++seen;
    span.add(pkt.get());
    if (pkt->size <= 0) continue;
    PacketInfo p;
    p.pts = pkt->pts;
    p.dts = pkt->dts;
    p.pos = pkt->pos;
    p.key = (pkt->flags & AV_PKT_FLAG_KEY) != 0;
    if (p.key || idx.packets.empty())
      idx.key_packets.push_back(static_cast<int64_t>(idx.packets.size()));
    idx.packets.push_back(p);
  }
  if (err != AVERROR_EOF)
    throw VideoError(in.path() + ": read error after packet " +
                     std::to_string(idx.packets.size()) + ": " +
                     ffmpeg_message(err));
  check_complete(in, seen, span);
  // A chunk decodes on its own when no later packet of it is shown before
  // its key frame (no open GOP) and timestamps are known to check that.
  bool ok = true;
  for (const auto& p : idx.packets)
    if (p.pts == AV_NOPTS_VALUE || p.dts == AV_NOPTS_VALUE) ok = false;
  for (size_t k = 1; ok && k < idx.key_packets.size(); ++k) {
    int64_t a = idx.key_packets[k];
    int64_t b = k + 1 < idx.key_packets.size()
                    ? idx.key_packets[k + 1]
                    : static_cast<int64_t>(idx.packets.size());
    for (int64_t i = a + 1; i < b; ++i)
      if (idx.packets[i].pts < idx.packets[a].pts) ok = false;
    if (idx.packets[a].dts <= idx.packets[a - 1].dts) ok = false;
  }
  idx.chunks_independent = ok;
  index_display_order(in, &idx);
  return idx;
}

bool same_packet(const PacketInfo& p, const AVPacket* q) {
  if (p.pos >= 0 && q->pos >= 0 && p.pos != q->pos) return false;
  return p.dts == q->dts && p.pts == q->pts;
}

// Decodes packets [first, end) of the video stream (end < 0: to the end of
// the file), drains the decoder, and hands every output frame to on_frame,
// which returns false to stop early.
template <class OnFrame>
void decode_packets(Input& in, AVCodecContext* ctx, const PacketIndex* idx,
                    int64_t first, int64_t end, OnFrame&& on_frame) {
  PacketPtr pkt(av_packet_alloc());
  FramePtr frame(av_frame_alloc());
  if (!pkt || !frame) throw std::bad_alloc();
  avcodec_flush_buffers(ctx);
  g_last_log.clear();
  bool have_pending_packet = false;  // pkt holds `first`, already read
  if (first == 0 && (in.fresh() || idx == nullptr)) {
    if (!in.fresh()) in.open();
  } else {
    const PacketInfo& target = idx->packets[first];
    int64_t ts = target.dts != AV_NOPTS_VALUE ? target.dts : target.pts;
    bool found = false;
    if (av_seek_frame(in.fmt(), in.stream_index(), ts, AVSEEK_FLAG_BACKWARD) >=
        0) {
      while (av_read_frame(in.fmt(), pkt.get()) >= 0) {
        if (pkt->stream_index != in.stream_index() || pkt->size <= 0) {
          av_packet_unref(pkt.get());
          continue;
        }
        if (same_packet(target, pkt.get())) {
          found = true;
          break;
        }
        bool overshot = pkt->dts != AV_NOPTS_VALUE && pkt->dts > target.dts;
        av_packet_unref(pkt.get());
        if (overshot) break;
      }
    }
    if (!found) {
      // The demuxer landed after the key frame: count packets from the top.
      in.open();
      in.touched();
      int64_t n = 0;
      while (av_read_frame(in.fmt(), pkt.get()) >= 0) {
        if (pkt->stream_index != in.stream_index() || pkt->size <= 0) {
          av_packet_unref(pkt.get());
          continue;
        }
        if (n++ == first) {
          found = true;
          break;
        }
        av_packet_unref(pkt.get());
      }
      if (!found)
        throw VideoError(in.path() + ": packet " + std::to_string(first) +
                         " not found (file changed since it was indexed?)");
    }
    have_pending_packet = true;
  }
  in.touched();

  int64_t ord = first;
  int64_t seen = 0;  // packets of the stream, empty ones too (from the top)
  PacketSpan span;
  bool stop = false;
  auto receive_all = [&]() {
    while (!stop) {
      int err = avcodec_receive_frame(ctx, frame.get());
      if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) return;
      if (err < 0)
        throw VideoError(in.path() + ": decoding failed near packet " +
                         std::to_string(ord) + ": " + ffmpeg_message(err));
      bool more = on_frame(frame.get());
      av_frame_unref(frame.get());
      if (!more) stop = true;
    }
  };
  while (!stop) {
    if (!have_pending_packet) {
      int err = av_read_frame(in.fmt(), pkt.get());
      if (err == AVERROR_EOF) {
        if (first == 0 && end < 0) check_complete(in, seen, span);
        break;
      }
      if (err < 0)
        throw VideoError(in.path() + ": read error at packet " +
                         std::to_string(ord) + ": " + ffmpeg_message(err));
      if (pkt->stream_index == in.stream_index()) {
        ++seen;
        span.add(pkt.get());
      }
      if (pkt->stream_index != in.stream_index() || pkt->size <= 0) {
        av_packet_unref(pkt.get());
        continue;
      }
    } else {
      ++seen;
    }
    have_pending_packet = false;
    if (end >= 0 && ord >= end) {
      av_packet_unref(pkt.get());
      break;
    }
    int err = avcodec_send_packet(ctx, pkt.get());
    av_packet_unref(pkt.get());
    if (err < 0 && err != AVERROR(EAGAIN))
      throw VideoError(in.path() + ": invalid data in packet " +
                       std::to_string(ord) + ": " + ffmpeg_message(err));
    ++ord;
    receive_all();
  }
  if (!stop) {
    int err = avcodec_send_packet(ctx, nullptr);
    if (err < 0 && err != AVERROR_EOF)
      throw VideoError(in.path() +
                       ": draining the decoder failed: " + ffmpeg_message(err));
    receive_all();
  }
}

// ---- per-frame work ----

inline int iround(float v) { return static_cast<int>(std::floor(v + 0.5f)); }
inline int clampi(int v, int lo, int hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

inline float mv_value(int motion, int scale, int src, int dst) {
  return scale > 0 ? static_cast<float>(motion) / static_cast<float>(scale)
                   : static_cast<float>(src - dst);
}

bool in_list(const AVMotionVector& m, int list) {
  return list == 0 ? m.source < 0 : m.source > 0;
}

// Vectors of one list averaged over each cell of the block grid, weighted
// by the pixels each block covers inside the cell.
void rasterize_grid(const AVMotionVector* mvs, size_t n, int list, int H, int W,
                    int b, int Hb, int Wb, float* out, uint8_t* mask,
                    std::vector<float>& count) {
  const size_t cells = static_cast<size_t>(Hb) * Wb;
  std::fill(out, out + 2 * cells, 0.f);
  count.assign(cells, 0.f);
  const bool pow2 = (b & (b - 1)) == 0;
  const int shift = pow2 ? __builtin_ctz(static_cast<unsigned>(b)) : 0;
  for (size_t i = 0; i < n; ++i) {
    const AVMotionVector& m = mvs[i];
    if (!in_list(m, list)) continue;
    int bx = m.dst_x - m.w / 2, by = m.dst_y - m.h / 2;
    int x0 = std::max(0, bx), x1 = std::min(W, bx + m.w);
    int y0 = std::max(0, by), y1 = std::min(H, by + m.h);
    if (x1 <= x0 || y1 <= y0) continue;
    float vx = mv_value(m.motion_x, m.motion_scale, m.src_x, m.dst_x);
    float vy = mv_value(m.motion_y, m.motion_scale, m.src_y, m.dst_y);
    if (pow2 && ((x0 | y0 | x1 | y1) & (b - 1)) == 0) {
      // The block covers whole cells: they take its vector (count < 0
      // marks a final value).
      for (int cy = y0 >> shift; cy < y1 >> shift; ++cy) {
        const size_t row = static_cast<size_t>(cy) * Wb;
        for (int cx = x0 >> shift; cx < x1 >> shift; ++cx) {
          out[row + cx] = vx;
          out[cells + row + cx] = vy;
          count[row + cx] = -1.f;
        }
      }
      continue;
    }
    for (int cy = y0 / b; cy <= (y1 - 1) / b; ++cy) {
      int oy = std::min(y1, (cy + 1) * b) - std::max(y0, cy * b);
      for (int cx = x0 / b; cx <= (x1 - 1) / b; ++cx) {
        int ox = std::min(x1, (cx + 1) * b) - std::max(x0, cx * b);
        float a = static_cast<float>(ox * oy);
        size_t c = static_cast<size_t>(cy) * Wb + cx;
        out[c] += a * vx;
        out[cells + c] += a * vy;
        count[c] += a;
      }
    }
  }
  for (size_t c = 0; c < cells; ++c) {
    const float k = count[c];
    if (k > 0) {
      out[c] /= k;
      out[cells + c] /= k;
    }
    mask[c] = k != 0.f;
  }
}

// A block's pixels inside the frame, and its vector in pixels.
struct BlockGeom {
  int x0, x1, y0, y1;
  float vx, vy;
};

inline bool block_geom(const AVMotionVector& m, int H, int W, BlockGeom* g) {
  int bx = m.dst_x - m.w / 2, by = m.dst_y - m.h / 2;
  g->x0 = std::max(0, bx);
  g->x1 = std::min(W, bx + m.w);
  g->y0 = std::max(0, by);
  g->y1 = std::min(H, by + m.h);
  g->vx = mv_value(m.motion_x, m.motion_scale, m.src_x, m.dst_x);
  g->vy = mv_value(m.motion_y, m.motion_scale, m.src_y, m.dst_y);
  return g->x1 > g->x0 && g->y1 > g->y0;
}

// Bilinear sample of an RGB (H, W, 3) image at (x, y), edges clamped.
inline void bilinear_rgb(const uint8_t* img, int H, int W, float x, float y,
                         float out[3]) {
  x = std::min(std::max(x, 0.f), static_cast<float>(W - 1));
  y = std::min(std::max(y, 0.f), static_cast<float>(H - 1));
  int x0 = static_cast<int>(std::floor(x)),
      y0 = static_cast<int>(std::floor(y));
  float fx = x - x0, fy = y - y0;
  int x1 = std::min(x0 + 1, W - 1), y1 = std::min(y0 + 1, H - 1);
  const uint8_t* a = img + (static_cast<size_t>(y0) * W + x0) * 3;
  const uint8_t* bb = img + (static_cast<size_t>(y0) * W + x1) * 3;
  const uint8_t* c = img + (static_cast<size_t>(y1) * W + x0) * 3;
  const uint8_t* d = img + (static_cast<size_t>(y1) * W + x1) * 3;
  for (int k = 0; k < 3; ++k) {
    float top = a[k] + fx * (bb[k] - a[k]);
    float bot = c[k] + fx * (d[k] - c[k]);
    out[k] = top + fy * (bot - top);
  }
}

// Motion-compensated prediction of the pixels that blocks of `list` cover:
// the reference sampled bilinearly at x + mv (edges clamped), a row of a
// block at a time: emit(p, n, vals, bytes) gets the first pixel
// p = y * W + x0, the run length n and the (n, 3) values: as floats in vals,
// or, for a whole-pixel vector inside the frame, the reference's own bytes
// (bytes != nullptr, vals unset: the sample is the pixel itself). Blocks are
// visited in the decoder's order (a pixel two blocks cover keeps the last
// one's value).
template <class Emit>
void predict_list(const std::vector<AVMotionVector>& rows, int list,
                  const uint8_t* ref, int H, int W, Emit&& emit) {
  std::vector<float> vals;
  for (const AVMotionVector& m : rows) {
    BlockGeom g;
    if (!in_list(m, list) || !block_geom(m, H, W, &g)) continue;
    const int ix = static_cast<int>(std::floor(g.vx));
    const int iy = static_cast<int>(std::floor(g.vy));
    const float fx = g.vx - ix, fy = g.vy - iy;
    const bool inside = g.x0 + g.vx >= 0 && g.x1 - 1 + g.vx <= W - 1 &&
                        g.y0 + g.vy >= 0 && g.y1 - 1 + g.vy <= H - 1;
    const int n = g.x1 - g.x0;
    vals.resize(3 * static_cast<size_t>(n));
    // restrict: uint8_t may alias anything, which keeps GCC from vectorising
    float* __restrict out = vals.data();
    for (int y = g.y0; y < g.y1; ++y) {
      const size_t p = static_cast<size_t>(y) * W + g.x0;
      if (!inside) {
        for (int x = g.x0; x < g.x1; ++x)
          bilinear_rgb(ref, H, W, x + g.vx, y + g.vy, out + 3 * (x - g.x0));
      } else {
        const uint8_t* __restrict a =
            ref + (static_cast<size_t>(y + iy) * W + g.x0 + ix) * 3;
        if (fx == 0.f && fy == 0.f) {
          emit(p, n, static_cast<const float*>(nullptr), a);
          continue;
        } else {
          // Same operation order as the clamped path: bit-identical results.
          const int dx = fx > 0.f ? 3 : 0;
          const size_t dy = fy > 0.f ? static_cast<size_t>(W) * 3 : 0;
          for (int i = 0; i < 3 * n; ++i) {
            float p00 = a[i], p01 = a[i + dx], p10 = a[i + dy],
                  p11 = a[i + dy + dx];
            float top = p00 + fx * (p01 - p00);
            float bot = p10 + fx * (p11 - p10);
            out[i] = top + fy * (bot - top);
          }
        }
      }
      emit(p, n, static_cast<const float*>(out),
           static_cast<const uint8_t*>(nullptr));
    }
  }
}

// res (3, H, W) = cur - pred for (H, W, 3) images of hw pixels. Integer
// only: the AVX2 clone (chosen at load time where the CPU has it) vectorises
// the channel split that baseline x86-64 does a byte at a time; same values.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void residual_planar(const uint8_t* __restrict cur,
                     const uint8_t* __restrict pred, size_t hw,
                     int16_t* __restrict res) {
  int16_t* __restrict r0 = res;
  int16_t* __restrict r1 = res + hw;
  int16_t* __restrict r2 = res + 2 * hw;
  for (size_t p = 0; p < hw; ++p) {
    r0[p] = static_cast<int16_t>(cur[3 * p] - pred[3 * p]);
    r1[p] = static_cast<int16_t>(cur[3 * p + 1] - pred[3 * p + 1]);
    r2[p] = static_cast<int16_t>(cur[3 * p + 2] - pred[3 * p + 2]);
  }
}

// The residual's rounding of a prediction: pr >= 0 (a blend of 0..255
// values), so truncation is floor(pr + 0.5).
inline uint8_t round_pred(float pr) {
  return static_cast<uint8_t>(static_cast<int>(pr + 0.5f));
}

// out[i] = round_pred(v[i]) for i < n.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void round_row(uint8_t* __restrict out, const float* __restrict v, int n) {
  for (int i = 0; i < n; ++i) out[i] = round_pred(v[i]);
}

// One row of a bi-predicted block: for n pixels, the mean of the two lists'
// samples (v from list 0, p1 from list 1) where list 1 covers the pixel
// (has1), else v; rounded once. A select, not a branch: the same values.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void blend_row(uint8_t* __restrict out, const float* __restrict v,
               const float* __restrict p1, const uint8_t* __restrict has1,
               int n) {
  for (int x = 0; x < n; ++x)
    for (int k = 0; k < 3; ++k) {
      const float mean = 0.5f * (v[3 * x + k] + p1[3 * x + k]);
      out[3 * x + k] = round_pred(has1[x] ? mean : v[3 * x + k]);
    }
}

// CoViAR's trace through one list: acc(p) = v + racc(round(p + v)), the
// reference's accumulated field at the rounded source pixel.
void trace_list(const std::vector<AVMotionVector>& rows, int list,
                const float* racc, int H, int W, float* acc) {
  const size_t hw = static_cast<size_t>(H) * W;
  for (const AVMotionVector& m : rows) {
    BlockGeom g;
    if (!in_list(m, list) || !block_geom(m, H, W, &g)) continue;
    // round(x + v) = x + round(v) for integer x.
    const int sx = static_cast<int>(std::floor(g.vx + 0.5f));
    const int sy = static_cast<int>(std::floor(g.vy + 0.5f));
    const bool inside = g.x0 + sx >= 0 && g.x1 - 1 + sx <= W - 1 &&
                        g.y0 + sy >= 0 && g.y1 - 1 + sy <= H - 1;
    for (int y = g.y0; y < g.y1; ++y) {
      const size_t row = static_cast<size_t>(y) * W;
      if (inside) {
        const size_t src = static_cast<size_t>(y + sy) * W + sx;
        for (int x = g.x0; x < g.x1; ++x) {
          acc[row + x] = g.vx + racc[src + x];
          acc[hw + row + x] = g.vy + racc[hw + src + x];
        }
      } else {
        const int yy = clampi(y + sy, 0, H - 1);
        for (int x = g.x0; x < g.x1; ++x) {
          size_t q = static_cast<size_t>(yy) * W + clampi(x + sx, 0, W - 1);
          acc[row + x] = g.vx + racc[q];
          acc[hw + row + x] = g.vy + racc[hw + q];
        }
      }
    }
  }
}

using Rgb = std::shared_ptr<const Pixels<uint8_t>>;

// The frames of a chunk whose pixels (residual, RGB of every frame) are kept:
// the asked display-order frames (sorted, distinct) counted from the chunk's
// first frame `base`, or every frame (none asked).
struct Want {
  std::shared_ptr<const std::vector<int64_t>> frames;  // null: every frame
  int64_t base = 0;

  bool operator()(int64_t local) const {
    return !frames ||
           std::binary_search(frames->begin(), frames->end(), base + local);
  }
  // Position of a kept frame among the chunk's kept frames (display order).
  int64_t row(int64_t local) const {
    if (!frames) return local;
    return std::lower_bound(frames->begin(), frames->end(), base + local) -
           std::lower_bound(frames->begin(), frames->end(), base);
  }
  // Kept frames among the chunk's first n (n < 0: unknown length); -1 when
  // not known.
  int64_t rows(int64_t n) const {
    if (!frames) return n;
    auto lo = std::lower_bound(frames->begin(), frames->end(), base);
    auto hi = n < 0
                  ? frames->end()
                  : std::lower_bound(frames->begin(), frames->end(), base + n);
    return hi - lo;
  }
};

struct ChunkOutput {
  std::vector<uint8_t> type;
  std::vector<int64_t> pts;
  std::vector<float> mv;
  std::vector<uint8_t> mask;
  std::vector<uint8_t> corrupt;  // FFmpeg flagged a decoding error
  // (local frame, its (3, H, W) residual): rows of `residual_block` in
  // display order where the chunk's kept frames are known ahead, else
  // blocks of their own in `residual_own`.
  std::vector<std::pair<int64_t, const int16_t*>> residual;
  Pixels<int16_t> residual_block;
  std::vector<Pixels<int16_t>> residual_own;
  std::vector<std::pair<int64_t, Pixels<uint8_t>>> rgb;
  int64_t frames() const { return static_cast<int64_t>(type.size()); }
};

class FrameProcessor {
 public:
  // want(local) says whether pixel outputs (residual, RGB of every frame)
  // of the chunk's local frame are kept.
  FrameProcessor(const std::string& path, const ReadOptions& opt, int H, int W,
                 int lowres, int64_t expected_frames, Want want,
                 ChunkOutput* out)
      : path_(path),
        opt_(opt),
        H_(H),
        W_(W),
        Hb_((H + opt.block - 1) / opt.block),
        Wb_((W + opt.block - 1) / opt.block),
        lowres_(lowres),
        want_(std::move(want)),
        out_(out) {
    need_state_ = opt.residual || opt.accumulate;
    need_rgb_ = opt.residual || opt.rgb != kRgbNone;
    if (opt.residual)
      residual_rows_ =
          want_.rows(expected_frames > 0 ? expected_frames : int64_t{-1});
    if (expected_frames > 0 && expected_frames < (int64_t{1} << 24)) {
      const size_t cells = static_cast<size_t>(Hb_) * Wb_;
      out_->mv.reserve(expected_frames * 2 * cells);
      out_->mask.reserve(expected_frames * cells);
      out_->type.reserve(expected_frames);
      out_->pts.reserve(expected_frames);
    }
  }

  int64_t emitted() const { return out_->frames(); }

  void on_frame(const AVFrame* f) {
    const int lowres = lowres_;
    if ((W_ + (1 << lowres) - 1) >> lowres != f->width ||
        (H_ + (1 << lowres) - 1) >> lowres != f->height)
      throw VideoError(path_ + ": frame " + std::to_string(received_) + " is " +
                       std::to_string(f->width << lowres) + "x" +
                       std::to_string(f->height << lowres) + ", the stream " +
                       std::to_string(W_) + "x" + std::to_string(H_) +
                       ": size changes are not supported");
    Item it;
    it.local = received_++;
    it.type = frame_type_code(f->pict_type);
    it.pts = f->best_effort_timestamp;
    it.corrupt =
        f->decode_error_flags != 0 || (f->flags & AV_FRAME_FLAG_CORRUPT) != 0;
    const AVFrameSideData* sd =
        av_frame_get_side_data(f, AV_FRAME_DATA_MOTION_VECTORS);
    const AVMotionVector* mvs =
        sd ? reinterpret_cast<const AVMotionVector*>(sd->data) : nullptr;
    size_t n = sd ? sd->size / sizeof(AVMotionVector) : 0;
    const size_t cells = static_cast<size_t>(Hb_) * Wb_;
    const int list = it.type == kB ? opt_.b_list : 0;
    if (!need_state_ && !need_rgb_) {
      // Motion only: rasterize straight into the output.
      const size_t off = out_->mv.size(), moff = out_->mask.size();
      out_->mv.resize(off + 2 * cells);
      out_->mask.resize(moff + cells);
      rasterize_grid(mvs, n, list, H_, W_, opt_.block, Hb_, Wb_,
                     out_->mv.data() + off, out_->mask.data() + moff, count_);
      out_->type.push_back(it.type);
      out_->pts.push_back(it.pts);
      out_->corrupt.push_back(it.corrupt);
      return;
    }
    it.mv.resize(2 * cells);
    it.mask.resize(cells);
    rasterize_grid(mvs, n, list, H_, W_, opt_.block, Hb_, Wb_, it.mv.data(),
                   it.mask.data(), count_);
    bool keep_rgb = opt_.rgb == kRgbAll
                        ? want_(it.local)
                        : (opt_.rgb == kRgbIFrames && it.type == kI);
    // B-frames are never references here: one that is neither kept nor given
    // a residual needs no RGB (most decoded frames of a sparse sample).
    if (need_rgb_ &&
        (it.type != kB || keep_rgb || (opt_.residual && want_(it.local))))
      it.rgb = to_rgb(f);
    it.keep_rgb = keep_rgb;
    if (!need_state_) {
      emit(std::move(it));
      return;
    }
    it.rows.assign(mvs, mvs + n);
    if (it.type == kB) {
      pending_.push_back(std::move(it));
      return;
    }
    Anchor next;
    compute(it, &prev_, nullptr, &next);
    // B-frames shown before this anchor reference it as their future frame;
    // a new I-frame starts a new GOP, so they do not trace through it.
    flush_pending(it.type == kI ? nullptr : &next, &next);
    if (it.type == kI) iframe_rgb_ = it.rgb;  // shared, not copied
    emit(std::move(it));
    prev_ = std::move(next);
  }

  void finish() { flush_pending(nullptr, nullptr); }

 private:
  struct Item {
    int64_t local = 0;
    uint8_t type = kI;
    int64_t pts = 0;
    uint8_t corrupt = 0;
    std::vector<float> mv;
    std::vector<uint8_t> mask;
    std::vector<AVMotionVector> rows;
    Rgb rgb;  // (H, W, 3); shared with the anchor it becomes
    int16_t* residual = nullptr;  // (3, H, W), in out_'s storage
    bool keep_rgb = false;
  };
  struct Anchor {
    bool valid = false;
    Rgb rgb;
    std::vector<float> acc;  // (2, H, W): traced I-frame position - p
  };

  Rgb to_rgb(const AVFrame* f) {
    sws_.reset(sws_getCachedContext(
        sws_.release(), W_, H_, static_cast<AVPixelFormat>(f->format), W_, H_,
        AV_PIX_FMT_RGB24, SWS_BILINEAR, nullptr, nullptr, nullptr));
    if (!sws_)
      throw VideoError(path_ + ": no conversion from pixel format " +
                       std::to_string(f->format) + " to RGB");
    // swscale's x86 YUV->RGB converts 8 pixels at a time and leaves the last
    // pixels of a row unwritten unless the stride holds the width rounded up
    // to 8: convert into padded rows, then pack.
    const int row = W_ * 3;
    const int stride = ((W_ + 7) / 8 * 8 * 3 + 63) / 64 * 64;
    auto rgb = std::make_shared<Pixels<uint8_t>>();
    uint8_t* target = nullptr;
    if (stride == row) {
      rgb->reset(static_cast<size_t>(H_) * row);
      target = rgb->data();
    } else {
      padded_.reset(static_cast<size_t>(H_) * stride + 64);
      target = padded_.data();
    }
    uint8_t* dst[4] = {target, nullptr, nullptr, nullptr};
    int dst_stride[4] = {stride, 0, 0, 0};
    sws_scale(sws_.get(), f->data, f->linesize, 0, H_, dst, dst_stride);
    if (stride != row) {
      rgb->reset(static_cast<size_t>(H_) * row);
      for (int y = 0; y < H_; ++y)
        std::memcpy(rgb->data() + static_cast<size_t>(y) * row,
                    padded_.data() + static_cast<size_t>(y) * stride, row);
    }
    return rgb;
  }

  // Accumulated motion and residual of one frame from its references:
  // r0 the anchor shown before it, r1 the one after (B-frames only).
  void compute(Item& it, const Anchor* r0, const Anchor* r1, Anchor* self) {
    const size_t hw = static_cast<size_t>(H_) * W_;
    const bool has_r0 = r0 && r0->valid, has_r1 = r1 && r1->valid;
    std::vector<float> acc;
    if (opt_.accumulate) {
      if (it.type == kI) {
        acc.assign(2 * hw, 0.f);
        std::fill(it.mv.begin(), it.mv.end(), 0.f);
      } else {
        // Intra pixels keep the reference's trace (zero motion); list 1
        // serves the pixels list 0 does not cover.
        if (has_r0)
          acc = r0->acc;
        else
          acc.assign(2 * hw, 0.f);
        if (has_r1) trace_list(it.rows, 1, r1->acc.data(), H_, W_, acc.data());
        if (has_r0) trace_list(it.rows, 0, r0->acc.data(), H_, W_, acc.data());
        average_to_grid(acc, it.mv);
      }
    }
    if (opt_.residual && want_(it.local)) {
      it.residual = residual_storage(it.local);
      int16_t* res = it.residual;
      const uint8_t* cur = it.rgb->data();
      if (opt_.accumulate) {
        const uint8_t* ref = it.type == kI ? cur
                             : iframe_rgb_ ? iframe_rgb_->data()
                                           : nullptr;
        for (int y = 0; y < H_; ++y) {
          for (int x = 0; x < W_; ++x) {
            size_t p = static_cast<size_t>(y) * W_ + x;
            int sx = clampi(iround(x + acc[p]), 0, W_ - 1);
            int sy = clampi(iround(y + acc[hw + p]), 0, H_ - 1);
            const uint8_t* q =
                ref ? ref + (static_cast<size_t>(sy) * W_ + sx) * 3 : nullptr;
            for (int k = 0; k < 3; ++k)
              res[k * hw + p] =
                  static_cast<int16_t>(cur[p * 3 + k] - (q ? q[k] : 0));
          }
        }
      } else if (it.type == kI) {
        std::fill_n(res, 3 * hw, int16_t{0});
      } else {
        predict(it, has_r0 ? r0->rgb->data() : nullptr,
                has_r1 && it.type == kB ? r1->rgb->data() : nullptr);
        residual_planar(cur, pred_u8_.data(), hw, res);
      }
    }
    if (self != nullptr) {
      self->valid = true;
      if (opt_.residual) self->rgb = it.rgb;  // shared, not copied
      self->acc = std::move(acc);
    }
  }

  // Where the residual of kept frame `local` goes: its row of the chunk's
  // block when the kept frames are known (assemble() can then hand the block
  // over whole), else a block of its own.
  int16_t* residual_storage(int64_t local) {
    const size_t n = static_cast<size_t>(H_) * W_ * 3;
    const int64_t row = want_.row(local);
    if (row >= 0 && row < residual_rows_) {
      Pixels<int16_t>& block = out_->residual_block;
      if (block.empty()) block.reset(static_cast<size_t>(residual_rows_) * n);
      return block.data() + static_cast<size_t>(row) * n;
    }
    out_->residual_own.emplace_back(n);
    return out_->residual_own.back().data();
  }

  // pred_u8_ (H, W, 3) = the rounded motion-compensated prediction of
  // `it` from ref0 (its past anchor) and ref1 (the future one; B-frames):
  // where both lists cover a pixel the mean of their predictions, where one
  // does its prediction, elsewhere (intra) the co-located pixel of ref0
  // (zero without one). Rounded once, as round_pred(0.5 * (p0 + p1)).
  void predict(const Item& it, const uint8_t* ref0, const uint8_t* ref1) {
    const size_t hw = static_cast<size_t>(H_) * W_;
    pred_u8_.reset(3 * hw);
    uint8_t* out = pred_u8_.data();
    if (ref0)
      std::memcpy(out, ref0, 3 * hw);
    else
      std::memset(out, 0, 3 * hw);
    auto round_run = [out](size_t p, int n, const float* v, const uint8_t* b) {
      if (b != nullptr)  // round_pred(float(b)) == b
        std::memcpy(out + 3 * p, b, 3 * static_cast<size_t>(n));
      else
        round_row(out + 3 * p, v, 3 * n);
    };
    if (!ref1) {  // one list: round straight into the prediction
      if (ref0) predict_list(it.rows, 0, ref0, H_, W_, round_run);
      return;
    }
    // Bi-prediction: list 1 first (float values and where it covers), then
    // list 0 blended with it, then the pixels only list 1 covers.
    pred1_.reset(3 * hw);
    has1_.assign(hw, 0);
    has0_.assign(hw, 0);
    float* p1 = pred1_.data();
    uint8_t* h1 = has1_.data();
    uint8_t* h0 = has0_.data();
    predict_list(it.rows, 1, ref1, H_, W_,
                 [p1, h1](size_t p, int n, const float* v, const uint8_t* b) {
                   if (b != nullptr)
                     for (int i = 0; i < 3 * n; ++i) p1[3 * p + i] = b[i];
                   else
                     std::memcpy(p1 + 3 * p, v, sizeof(float) * 3 * n);
                   std::memset(h1 + p, 1, n);
                 });
    if (ref0)
      predict_list(it.rows, 0, ref0, H_, W_,
                   [out, p1, h1, h0, this](size_t p, int n, const float* v,
                                           const uint8_t* b) {
                     std::memset(h0 + p, 1, n);
                     if (b != nullptr) {
                       float* t = row_.data();
                       for (int i = 0; i < 3 * n; ++i) t[i] = b[i];
                       v = t;
                     }
                     blend_row(out + 3 * p, v, p1 + 3 * p, h1 + p, n);
                   });
    for (const AVMotionVector& m : it.rows) {
      BlockGeom g;
      if (!in_list(m, 1) || !block_geom(m, H_, W_, &g)) continue;
      for (int y = g.y0; y < g.y1; ++y)
        for (int x = g.x0; x < g.x1; ++x) {
          const size_t p = static_cast<size_t>(y) * W_ + x;
          if (h0[p]) continue;
          for (int k = 0; k < 3; ++k)
            out[3 * p + k] = round_pred(p1[3 * p + k]);
        }
    }
  }

  void average_to_grid(const std::vector<float>& acc, std::vector<float>& mv) {
    const size_t hw = static_cast<size_t>(H_) * W_;
    const size_t cells = static_cast<size_t>(Hb_) * Wb_;
    const int b = opt_.block;
    std::fill(mv.begin(), mv.end(), 0.f);
    for (int cy = 0; cy < Hb_; ++cy) {
      int y1 = std::min(H_, (cy + 1) * b);
      for (int cx = 0; cx < Wb_; ++cx) {
        int x1 = std::min(W_, (cx + 1) * b);
        float sx = 0.f, sy = 0.f;
        for (int y = cy * b; y < y1; ++y)
          for (int x = cx * b; x < x1; ++x) {
            size_t p = static_cast<size_t>(y) * W_ + x;
            sx += acc[p];
            sy += acc[hw + p];
          }
        float n = static_cast<float>((y1 - cy * b) * (x1 - cx * b));
        size_t c = static_cast<size_t>(cy) * Wb_ + cx;
        mv[c] = sx / n;
        mv[cells + c] = sy / n;
      }
    }
  }

  void flush_pending(const Anchor* next_for_motion, const Anchor* next_pix) {
    while (!pending_.empty()) {
      Item it = std::move(pending_.front());
      pending_.pop_front();
      if (opt_.accumulate) {
        compute(it, &prev_, next_for_motion, nullptr);
      } else {
        compute(it, &prev_, next_pix, nullptr);
      }
      emit(std::move(it));
    }
  }

  void emit(Item&& it) {
    out_->type.push_back(it.type);
    out_->pts.push_back(it.pts);
    out_->corrupt.push_back(it.corrupt);
    out_->mv.insert(out_->mv.end(), it.mv.begin(), it.mv.end());
    out_->mask.insert(out_->mask.end(), it.mask.begin(), it.mask.end());
    if (opt_.residual && want_(it.local)) {
      if (it.residual == nullptr) {
        it.residual = residual_storage(it.local);
        std::fill_n(it.residual, static_cast<size_t>(H_) * W_ * 3, int16_t{0});
      }
      out_->residual.emplace_back(it.local, it.residual);
    }
    if (it.keep_rgb) {
      const size_t hw = static_cast<size_t>(H_) * W_;
      Pixels<uint8_t> chw(3 * hw);
      const uint8_t* rgb = it.rgb->data();
      for (size_t p = 0; p < hw; ++p)
        for (int k = 0; k < 3; ++k) chw[k * hw + p] = rgb[p * 3 + k];
      out_->rgb.emplace_back(it.local, std::move(chw));
    }
  }

  std::string path_;
  ReadOptions opt_;
  int H_, W_, Hb_, Wb_;
  int lowres_ = 0;  // the decoder's: frames are (W >> lowres) wide
  Want want_;
  int64_t residual_rows_ = -1;  // rows of out_->residual_block (-1: unknown)
  ChunkOutput* out_;
  bool need_state_ = false, need_rgb_ = false;
  int64_t received_ = 0;
  std::vector<float> count_;
  SwsPtr sws_;
  Pixels<uint8_t> padded_;
  Pixels<uint8_t> pred_u8_;  // predict()'s output and scratch
  std::vector<float> row_ =
      std::vector<float>(3 * 256);  // a block row (w <= 255)
  Pixels<float> pred1_;
  Pixels<uint8_t> has0_, has1_;
  Anchor prev_;
  Rgb iframe_rgb_;
  std::deque<Item> pending_;
};

void validate(const std::string& path, const StreamInfo& info,
              const ReadOptions& opt) {
  if (opt.block < 1 || opt.block > 256)
    throw ArgumentError("block must be in [1, 256], got " +
                        std::to_string(opt.block));
  if (opt.b_list != 0 && opt.b_list != 1)
    throw ArgumentError("b_list must be 0 (past) or 1 (future), got " +
                        std::to_string(opt.b_list));
  if (opt.rgb < kRgbNone || opt.rgb > kRgbAll)
    throw ArgumentError("bad rgb mode " + std::to_string(opt.rgb));
  if (opt.threads < 1)
    throw ArgumentError("threads must be >= 1, got " +
                        std::to_string(opt.threads));
  for (int64_t f : opt.frames)
    if (f < 0)
      throw ArgumentError(path + ": frame index " + std::to_string(f) +
                          " is negative");
  if (info.intra_only)
    throw ArgumentError(path + ": codec '" + info.codec +
                        "' is intra-only: it has no motion vectors");
  if (!info.exports_mvs)
    throw ArgumentError(path +
                        ": FFmpeg does not export motion vectors for "
                        "codec '" +
                        info.codec +
                        "' (it does for h264, mpeg4, mpeg1video, mpeg2video, "
                        "h263, flv1, msmpeg4, wmv1/2); re-encode it, e.g. "
                        "mvaccel.video.reencode(src, dst, codec='h264')");
}

// Assembles chunk outputs (in display order) into the result.
ClipResult assemble(const std::string& path, const ReadOptions& opt, int H,
                    int W, std::vector<ChunkOutput>& chunks,
                    const std::vector<int64_t>& bases) {
  ClipResult r;
  r.H = H;
  r.W = W;
  r.block = opt.block;
  r.Hb = (H + opt.block - 1) / opt.block;
  r.Wb = (W + opt.block - 1) / opt.block;
  const size_t cells = static_cast<size_t>(r.Hb) * r.Wb;
  int64_t total = 0;
  for (auto& c : chunks) total += c.frames();
  r.total_decoded = total;
  if (total == 0)
    throw VideoError(
        path + ": no video frame could be decoded" +
        (g_last_log.empty() ? std::string() : " (FFmpeg: " + g_last_log + ")"));
  std::vector<uint8_t> type;
  std::vector<int64_t> pts;
  std::vector<float> mv;
  std::vector<uint8_t> mask;
  std::vector<uint8_t> bad;
  std::unordered_map<int64_t, const int16_t*> res_of;
  std::unordered_map<int64_t, const Pixels<uint8_t>*> rgb_of;
  if (chunks.size() == 1) {
    type = std::move(chunks[0].type);
    pts = std::move(chunks[0].pts);
    mv = std::move(chunks[0].mv);
    mask = std::move(chunks[0].mask);
    bad = std::move(chunks[0].corrupt);
  } else {
    type.reserve(total);
    pts.reserve(total);
    mv.reserve(total * 2 * cells);
    mask.reserve(total * cells);
  }
  for (size_t c = 0; c < chunks.size(); ++c) {
    auto& ch = chunks[c];
    if (chunks.size() > 1) {
      type.insert(type.end(), ch.type.begin(), ch.type.end());
      pts.insert(pts.end(), ch.pts.begin(), ch.pts.end());
      mv.insert(mv.end(), ch.mv.begin(), ch.mv.end());
      mask.insert(mask.end(), ch.mask.begin(), ch.mask.end());
      bad.insert(bad.end(), ch.corrupt.begin(), ch.corrupt.end());
    }
    for (auto& e : ch.residual) res_of[bases[c] + e.first] = e.second;
    for (auto& e : ch.rgb) rgb_of[bases[c] + e.first] = &e.second;
  }
  // I-frames: the previous frame's field (Zhang et al.) or zeros.
  if (!opt.accumulate) {
    for (int64_t t = 0; t < total; ++t) {
      if (type[t] != kI) continue;
      float* dst = mv.data() + t * 2 * cells;
      if (opt.fill_iframe == kFillPrevious && t > 0)
        std::copy(dst - 2 * cells, dst, dst);
      else
        std::fill(dst, dst + 2 * cells, 0.f);
    }
  }
  std::vector<int64_t> gop(total);
  int64_t g = 0;
  for (int64_t t = 0; t < total; ++t) {
    if (t > 0 && type[t] == kI) ++g;
    gop[t] = g;
  }
  std::vector<int64_t> frames = opt.frames;
  if (frames.empty()) {
    frames.resize(total);
    for (int64_t t = 0; t < total; ++t) frames[t] = t;
  }
  for (int64_t f : frames)
    if (f >= total)
      throw ArgumentError(path + ": frame " + std::to_string(f) +
                          " is out of range: the video has " +
                          std::to_string(total) + " frames");
  const int64_t T = static_cast<int64_t>(frames.size());
  const size_t hw = static_cast<size_t>(H) * W;
  r.T = T;
  r.frame_index = frames;
  const bool all = opt.frames.empty();  // every frame in order: no copies
  if (all) {
    r.mv = std::move(mv);
    r.mask = std::move(mask);
    r.frame_type = type;
    r.pts = pts;
    r.gop_index = gop;
    r.corrupt = bad;
  } else {
    r.mv.resize(T * 2 * cells);
    r.mask.resize(T * cells);
    r.frame_type.resize(T);
    r.pts.resize(T);
    r.gop_index.resize(T);
    r.corrupt.resize(T);
  }
  // The residuals as one chunk's block holds them (its kept frames, in
  // order): the block is the output, no copy.
  bool res_moved = false;
  if (opt.residual && chunks.size() == 1 && bases[0] == 0) {
    const ChunkOutput& ch = chunks[0];
    const int16_t* base = ch.residual_block.data();
    bool same = base != nullptr &&
                static_cast<int64_t>(ch.residual.size()) == T &&
                ch.residual_block.size() >= static_cast<size_t>(T) * 3 * hw;
    for (int64_t i = 0; same && i < T; ++i)
      same = ch.residual[i].first == frames[i] &&
             ch.residual[i].second == base + static_cast<size_t>(i) * 3 * hw;
    if (same) {
      r.residual = std::move(chunks[0].residual_block);
      r.residual.reset(T * 3 * hw);  // the size, in the same block
      res_moved = true;
    }
  }
  if (opt.residual && !res_moved) r.residual.reset(T * 3 * hw);
  for (int64_t i = 0; i < T; ++i) {
    int64_t f = frames[i];
    if (!all) {
      std::copy_n(mv.data() + f * 2 * cells, 2 * cells,
                  r.mv.data() + i * 2 * cells);
      std::copy_n(mask.data() + f * cells, cells, r.mask.data() + i * cells);
      r.frame_type[i] = type[f];
      r.pts[i] = pts[f];
      r.gop_index[i] = gop[f];
      r.corrupt[i] = bad[f];
    }
    if (opt.residual && !res_moved) {
      auto it = res_of.find(f);
      if (it == res_of.end())
        throw VideoError(path + ": internal: no residual for frame " +
                         std::to_string(f));
      std::copy_n(it->second, 3 * hw, r.residual.data() + i * 3 * hw);
    }
  }
  if (opt.rgb == kRgbAll) {
    r.rgb.reset(T * 3 * hw);
    r.rgb_index = frames;
    for (int64_t i = 0; i < T; ++i) {
      auto it = rgb_of.find(frames[i]);
      if (it == rgb_of.end())
        throw VideoError(path + ": internal: no RGB for frame " +
                         std::to_string(frames[i]));
      std::copy_n(it->second->data(), 3 * hw, r.rgb.data() + i * 3 * hw);
    }
  } else if (opt.rgb == kRgbIFrames) {
    // The I-frame of every GOP the asked frames touch, in GOP order.
    std::vector<int64_t> gops;
    std::vector<const Pixels<uint8_t>*> keys;
    for (int64_t f : frames) gops.push_back(gop[f]);
    std::sort(gops.begin(), gops.end());
    gops.erase(std::unique(gops.begin(), gops.end()), gops.end());
    for (int64_t gg : gops) {
      int64_t first = -1;
      for (int64_t t = 0; t < total; ++t)
        if (gop[t] == gg && type[t] == kI) {
          first = t;
          break;
        }
      if (first < 0) continue;  // a leading GOP without an I-frame
      auto it = rgb_of.find(first);
      if (it == rgb_of.end()) continue;
      r.rgb_index.push_back(first);
      keys.push_back(it->second);
    }
    r.rgb.reset(keys.size() * 3 * hw);
    for (size_t k = 0; k < keys.size(); ++k)
      std::copy_n(keys[k]->data(), 3 * hw, r.rgb.data() + k * 3 * hw);
  }
  return r;
}

ChunkOutput decode_chunk(Input& in, AVCodecContext* ctx, const PacketIndex* idx,
                         int64_t first, int64_t end, const ReadOptions& opt,
                         int H, int W, Want want, int64_t stop_after) {
  ChunkOutput out;
  int64_t expected = end >= 0 ? end - first : in.stream()->nb_frames - first;
  if (stop_after >= 0) expected = std::min(expected, stop_after + 1);
  FrameProcessor proc(in.path(), opt, H, W, ctx->lowres, expected,
                      std::move(want), &out);
  decode_packets(in, ctx, idx, first, end, [&](const AVFrame* f) {
    proc.on_frame(f);
    return stop_after < 0 || proc.emitted() <= stop_after;
  });
  proc.finish();
  return out;
}

// Drops the frames from `n` on (local numbers) out of a chunk's output.
void truncate_chunk(ChunkOutput* out, int64_t n, size_t cells) {
  if (out->frames() <= n) return;
  out->type.resize(n);
  out->pts.resize(n);
  out->corrupt.resize(n);
  out->mv.resize(n * 2 * cells);
  out->mask.resize(n * cells);
  auto drop = [n](auto& v) {
    v.erase(std::remove_if(v.begin(), v.end(),
                           [n](const auto& e) { return e.first >= n; }),
            v.end());
  };
  drop(out->residual);
  drop(out->rgb);
}

// How a GOP read starts and maps decoded frames to display numbers.
enum class GopStart {
  kPreroll,  // one GOP early where frames reorder, display from the index
  kTop,      // the start of the file, display from the index
  kCount,    // the start of the file, display = output count (the definition)
};

// Decodes display-order GOPs [g0, g1] of the index (see GopReader). Frames
// before GOP g0 only prime the decoder; the next GOP's key frame is fed to
// the processor (B-frames shown before it use it) and dropped. Returns false
// where the decoded frames do not pair up with the index (the caller
// retries from the top of the file).
bool decode_gops(Input& in, AVCodecContext* ctx, const PacketIndex& idx,
                 int64_t g0, int64_t g1, GopStart how, const ReadOptions& opt,
                 int H, int W, Want want, int64_t stop_after,
                 ChunkOutput* out) {
  const auto& keys = idx.key_packets;
  const auto& kd = idx.key_display;
  const int64_t K = static_cast<int64_t>(keys.size());
  const int64_t npk = static_cast<int64_t>(idx.packets.size());
  const int64_t D0 = kd[g0];
  const bool has_next = g1 + 1 < K;
  const int64_t D1 = has_next ? kd[g1 + 1] : npk;
  // Packets to send: up to the next key packet (the anchor before it is then
  // output by the decoder with its vectors; a drained MPEG-4 frame has none)
  // and every packet shown before the next GOP (open-GOP leading B-frames).
  int64_t end = -1;
  if (has_next) {
    end = keys[g1 + 1] + 1;
    // One past the last packet shown before D1 (a binary search on the
    // non-decreasing suffix minima, not a scan to the end of the stream).
    const auto& sm = idx.suffix_min_display;
    auto past = std::partition_point(sm.begin() + end, sm.end(),
                                     [D1](int64_t v) { return v < D1; });
    end = std::max(end, static_cast<int64_t>(past - sm.begin()));
  }
  int64_t s = g0;
  if (how != GopStart::kPreroll)
    s = 0;
  else if (g0 > 0 && idx.reorder &&
           (!idx.by_pts || idx.state_across_keys || idx.open_gop[g0]))
    s = g0 - 1;
  const bool count = how == GopStart::kCount || !idx.by_pts;
  // Display numbers counted from a key frame other than the stream's first
  // hold only if the decoder gave a frame for every packet from there: it
  // drops an open GOP's leading B-frames (they need the GOP before), which
  // would shift every number after them, with no timestamp to tell. Such a
  // read runs to the next GOP's key frame (or the end of the stream) to
  // check the count, whatever frames were asked.
  const bool verify =
      count && how != GopStart::kCount && idx.reorder && keys[s] > 0;
  if (verify) stop_after = -1;
  std::unordered_map<int64_t, int64_t> disp_of;
  if (!count) {
    disp_of.reserve(2 * (D1 - kd[s] + 64));
    for (int64_t p = keys[s]; p < (end < 0 ? npk : end); ++p)
      disp_of[idx.packets[p].pts] = idx.display[p];
  }
  *out = ChunkOutput();
  const int64_t n_keep = D1 - D0;
  FrameProcessor proc(in.path(), opt, H, W, ctx->lowres, n_keep + 1,
                      std::move(want), out);
  int64_t received = 0, fed = 0;
  bool ok = true, reached_end = false;
  decode_packets(in, ctx, &idx, keys[s], end, [&](const AVFrame* f) {
    int64_t d;
    if (count) {
      d = kd[s] + received;
    } else {
      auto it = disp_of.find(f->best_effort_timestamp);
      if (it == disp_of.end()) {
        ok = false;
        return false;
      }
      d = it->second;
    }
    ++received;
    if (d < D0) return true;
    if (d != D0 + fed ||
        (fed == 0 && g0 > 0 && frame_type_code(f->pict_type) != kI)) {
      if (how == GopStart::kCount)
        throw VideoError(
            in.path() + ": GOP " + std::to_string(g0) +
            " cannot be read on its own: frame " + std::to_string(D0) +
            " (where packet " + std::to_string(keys[g0]) +
            " would be shown) is not its key frame; the container has no "
            "timestamps to place open-GOP frames (AVI?): read the whole "
            "video with read_motion, or remux it to MP4/MKV");
      ok = false;
      return false;
    }
    proc.on_frame(f);
    ++fed;
    if (has_next && d >= D1) {
      reached_end = true;
      return false;
    }
    return stop_after < 0 || proc.emitted() <= stop_after;
  });
  if (!ok) return false;
  proc.finish();
  const bool stopped_early = stop_after >= 0 && proc.emitted() > stop_after;
  if (how != GopStart::kCount && !stopped_early && has_next && !reached_end)
    return false;  // frames missing before the next GOP
  if (verify && !has_next && kd[s] + received != npk)
    return false;  // frames missing before the end of the stream
  const size_t cells = static_cast<size_t>((H + opt.block - 1) / opt.block) *
                       ((W + opt.block - 1) / opt.block);
  truncate_chunk(out, n_keep, cells);
  return true;
}

// decode_gops from the best start, then from the top of the file.
ChunkOutput decode_gops_exact(Input& in, AVCodecContext* ctx,
                              const PacketIndex& idx, int64_t g0, int64_t g1,
                              const ReadOptions& opt, int H, int W,
                              const Want& want, int64_t stop_after) {
  ChunkOutput out;
  for (GopStart how : {GopStart::kPreroll, GopStart::kTop, GopStart::kCount}) {
    if (how == GopStart::kTop && !idx.by_pts) continue;
    if (decode_gops(in, ctx, idx, g0, g1, how, opt, H, W, want, stop_after,
                    &out))
      return out;
  }
  return out;
}

Want make_want(const ReadOptions& opt, int64_t base) {
  Want w;
  w.base = base;
  if (!opt.frames.empty()) {
    auto set = std::make_shared<std::vector<int64_t>>(opt.frames);
    std::sort(set->begin(), set->end());
    set->erase(std::unique(set->begin(), set->end()), set->end());
    w.frames = std::move(set);
  }
  return w;
}

ClipResult read_sequential(Input& in, const ReadOptions& opt, int H, int W) {
  bool pix = opt.residual || opt.rgb != kRgbNone;
  CodecPtr ctx = open_decoder(in, true, opt.fast && !pix);
  int64_t stop_after = -1;
  if (!opt.frames.empty())
    stop_after = *std::max_element(opt.frames.begin(), opt.frames.end());
  std::vector<ChunkOutput> chunks;
  chunks.push_back(decode_chunk(in, ctx.get(), nullptr, 0, -1, opt, H, W,
                                make_want(opt, 0), stop_after));
  ClipResult r = assemble(in.path(), opt, H, W, chunks, {0});
  r.info = in.info();
  return r;
}

}  // namespace

ProbeResult probe(const std::string& path, bool decode) {
  Input in(path);
  ProbeResult r;
  r.info = in.info();
  PacketIndex idx = scan_packets(in);
  r.num_packets = static_cast<int64_t>(idx.packets.size());
  r.key_packets = idx.key_packets;
  r.key_frames = idx.key_display;
  r.chunks_independent = idx.chunks_independent;
  if (idx.packets.empty())
    throw VideoError(
        path + ": the video stream has no packets" +
        (g_last_log.empty() ? std::string() : " (FFmpeg: " + g_last_log + ")"));
  if (decode) {
    CodecPtr ctx = open_decoder(in, false, true);
    decode_packets(in, ctx.get(), nullptr, 0, -1, [&](const AVFrame* f) {
      r.frame_types.push_back(frame_type_code(f->pict_type));
      r.pts.push_back(f->best_effort_timestamp);
      return true;
    });
    if (r.frame_types.empty())
      throw VideoError(path + ": no video frame could be decoded" +
                       (g_last_log.empty() ? std::string()
                                           : " (FFmpeg: " + g_last_log + ")"));
    r.decoded = true;
  }
  return r;
}

ClipResult read_clip(const std::string& path, const ReadOptions& opt) {
  Input in(path);
  StreamInfo info = in.info();
  validate(path, info, opt);
  const int H = info.height, W = info.width;
  if (opt.threads <= 1) return read_sequential(in, opt, H, W);

  PacketIndex idx = scan_packets(in);
  const int64_t K = static_cast<int64_t>(idx.key_packets.size());
  if (K < 2) return read_sequential(in, opt, H, W);
  // GOPs past the last asked frame are not decoded.
  int64_t last_needed = K - 1;
  if (!opt.frames.empty()) {
    int64_t fmax = *std::max_element(opt.frames.begin(), opt.frames.end());
    last_needed = 0;
    for (int64_t k = 0; k < K; ++k)
      if (idx.key_display[k] <= fmax) last_needed = k;
  }
  const int64_t nchunks = last_needed + 1;
  std::vector<ChunkOutput> chunks(nchunks);
  std::vector<int64_t> bases(nchunks);
  for (int64_t k = 0; k < nchunks; ++k) bases[k] = idx.key_display[k];
  std::atomic<int64_t> next{0};
  std::atomic<bool> unpaired{false};
  std::mutex err_mu;
  std::exception_ptr error;
  const bool pix = opt.residual || opt.rgb != kRgbNone;
  auto worker = [&](Input* own) {
    try {
      std::unique_ptr<Input> mine;
      if (own == nullptr) {
        mine = std::make_unique<Input>(path);
        own = mine.get();
      }
      for (;;) {
        int64_t k = next.fetch_add(1);
        if (k >= nchunks || unpaired) break;
        {
          std::lock_guard<std::mutex> lock(err_mu);
          if (error) break;
        }
        // A fresh decoder per GOP: decoders keep state across a flush
        // (MPEG-4 B-frame timing), which would make chunks depend on order.
        CodecPtr ctx = open_decoder(*own, true, opt.fast && !pix);
        if (!decode_gops(*own, ctx.get(), idx, k, k, GopStart::kPreroll, opt, H,
                         W, make_want(opt, bases[k]), -1, &chunks[k]))
          unpaired = true;
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(err_mu);
      if (!error) error = std::current_exception();
    }
  };
  const int nthreads =
      static_cast<int>(std::min<int64_t>(opt.threads, nchunks));
  std::vector<std::thread> pool;
  for (int t = 1; t < nthreads; ++t) pool.emplace_back(worker, nullptr);
  worker(&in);
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  if (unpaired) {
    // Frames and packets do not pair up (open GOPs without timestamps,
    // dropped frames): the sequential decode is the definition.
    Input again(path);
    return read_sequential(again, opt, H, W);
  }
  ClipResult r = assemble(path, opt, H, W, chunks, bases);
  r.parallel_used = true;
  r.info = info;
  return r;
}

struct GopReader::Impl {
  std::string path;
  std::unique_ptr<Input> in;
  StreamInfo info;
  PacketIndex idx;
  std::mutex mu;
};

GopReader::GopReader(const std::string& path) : impl_(new Impl) {
  impl_->path = path;
  impl_->in = std::make_unique<Input>(path);
  impl_->info = impl_->in->info();
  impl_->idx = scan_packets(*impl_->in);
  if (impl_->idx.packets.empty())
    throw VideoError(path + ": the video stream has no packets");
}

GopReader::~GopReader() = default;

const StreamInfo& GopReader::info() const { return impl_->info; }

const std::vector<int64_t>& GopReader::key_packets() const {
  return impl_->idx.key_packets;
}

const std::vector<int64_t>& GopReader::key_frames() const {
  return impl_->idx.key_display;
}

int64_t GopReader::num_packets() const {
  return static_cast<int64_t>(impl_->idx.packets.size());
}

ClipResult GopReader::read(int64_t first_chunk, int64_t last_chunk,
                           const ReadOptions& opt) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  validate(m.path, m.info, opt);
  const auto& keys = m.idx.key_packets;
  const int64_t K = static_cast<int64_t>(keys.size());
  if (first_chunk < 0 || last_chunk >= K || first_chunk > last_chunk)
    throw ArgumentError(m.path + ": GOP range [" + std::to_string(first_chunk) +
                        ", " + std::to_string(last_chunk) +
                        "] is out of range: the video has " +
                        std::to_string(K) + " GOPs");
  const bool pix = opt.residual || opt.rgb != kRgbNone;
  // A fresh decoder per read: decoders keep state across a flush (MPEG-4
  // B-frame timing), so a reused one makes a read depend on the reads before.
  CodecPtr ctx = open_decoder(*m.in, true, opt.fast && !pix);
  std::vector<ChunkOutput> chunks;
  int64_t stop_after = -1;
  if (!opt.frames.empty())
    stop_after = *std::max_element(opt.frames.begin(), opt.frames.end());
  chunks.push_back(decode_gops_exact(
      *m.in, ctx.get(), m.idx, first_chunk, last_chunk, opt, m.info.height,
      m.info.width, make_want(opt, 0), stop_after));
  ClipResult r =
      assemble(m.path, opt, m.info.height, m.info.width, chunks, {0});
  r.info = m.info;
  return r;
}

}  // namespace mvaccel::video
