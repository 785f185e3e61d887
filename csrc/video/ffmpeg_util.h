// RAII owners for FFmpeg objects and the exceptions the reader throws.
#pragma once

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libavutil/motion_vector.h>
#include <libswscale/swscale.h>
}

#include <memory>
#include <stdexcept>
#include <string>

namespace mvaccel::video {

// Errors of the file or of FFmpeg (Python: mvaccel._video.VideoError, a
// RuntimeError). The message names the file and FFmpeg's own words.
class VideoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Errors of the arguments (Python: ValueError).
class ArgumentError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// The file does not exist or cannot be read (Python: FileNotFoundError).
class MissingFileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline std::string av_error_string(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(err, buf, sizeof(buf));
  return std::string(buf);
}

struct FormatDeleter {
  void operator()(AVFormatContext* p) const { avformat_close_input(&p); }
};
struct CodecDeleter {
  void operator()(AVCodecContext* p) const { avcodec_free_context(&p); }
};
struct FrameDeleter {
  void operator()(AVFrame* p) const { av_frame_free(&p); }
};
struct PacketDeleter {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsDeleter {
  void operator()(SwsContext* p) const { sws_freeContext(p); }
};
struct DictDeleter {
  void operator()(AVDictionary* p) const { av_dict_free(&p); }
};

using FormatPtr = std::unique_ptr<AVFormatContext, FormatDeleter>;
using CodecPtr = std::unique_ptr<AVCodecContext, CodecDeleter>;
using FramePtr = std::unique_ptr<AVFrame, FrameDeleter>;
using PacketPtr = std::unique_ptr<AVPacket, PacketDeleter>;
using SwsPtr = std::unique_ptr<SwsContext, SwsDeleter>;

// Unreferences a packet when it goes out of scope (one per read).
class PacketRef {
 public:
  explicit PacketRef(AVPacket* p) : p_(p) {}
  ~PacketRef() { av_packet_unref(p_); }
  PacketRef(const PacketRef&) = delete;
  PacketRef& operator=(const PacketRef&) = delete;

 private:
  AVPacket* p_;
};

}  // namespace mvaccel::video
