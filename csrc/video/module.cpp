// mvaccel._video: the FFmpeg side of mvaccel (I/O, not tensor ops), a
// pybind11 module of its own so the ops build without FFmpeg.
#include <pybind11/pybind11.h>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libswscale/swscale.h>
}

#include <string>

namespace py = pybind11;

namespace {

std::string version_string(unsigned v) {
  return std::to_string(AV_VERSION_MAJOR(v)) + "." +
         std::to_string(AV_VERSION_MINOR(v)) + "." +
         std::to_string(AV_VERSION_MICRO(v));
}

}  // namespace

PYBIND11_MODULE(_video, m) {
  m.doc() = "mvaccel's FFmpeg reader (compressed-domain video)";
  m.def(
      "ffmpeg_versions",
      [] {
        py::dict d;
        d["libavformat"] = version_string(avformat_version());
        d["libavcodec"] = version_string(avcodec_version());
        d["libavutil"] = version_string(avutil_version());
        d["libswscale"] = version_string(swscale_version());
        d["ffmpeg"] = std::string(av_version_info());
        return d;
      },
      "Versions of the FFmpeg libraries this build runs against.");
}
