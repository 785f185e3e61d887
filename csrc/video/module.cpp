// mvaccel._video: the FFmpeg side of mvaccel (I/O, not tensor ops), a
// pybind11 module of its own so the ops build without FFmpeg.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <type_traits>
#include <vector>

#include "reader.h"

namespace py = pybind11;
namespace mv = mvaccel::video;

namespace {

std::string version_string(unsigned v) {
  return std::to_string(AV_VERSION_MAJOR(v)) + "." +
         std::to_string(AV_VERSION_MINOR(v)) + "." +
         std::to_string(AV_VERSION_MICRO(v));
}

// A numpy array that owns the buffer (no copy): a std::vector, or a reader
// Pixels block, which goes back to the reader's cache when numpy frees it.
template <class Buffer>
py::array own(Buffer&& v, std::vector<py::ssize_t> shape) {
  using B = std::decay_t<Buffer>;
  using T = typename B::value_type;
  auto* heap = new B(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<B*>(p); });
  return py::array_t<T>(shape, heap->data(), owner);
}

py::dict info_dict(const mv::StreamInfo& s) {
  py::dict d;
  d["codec"] = s.codec;
  d["codec_long"] = s.codec_long;
  d["width"] = s.width;
  d["height"] = s.height;
  d["fps"] = s.fps;
  d["time_base"] = py::make_tuple(s.time_base_num, s.time_base_den);
  d["duration"] = s.duration;
  d["exports_mvs"] = s.exports_mvs;
  d["intra_only"] = s.intra_only;
  return d;
}

py::dict clip_dict(mv::ClipResult&& r) {
  py::dict d;
  const py::ssize_t T = r.T, H = r.H, W = r.W;
  d["mv"] = own(std::move(r.mv), {T, 2, r.Hb, r.Wb});
  d["mask"] = own(std::move(r.mask), {T, r.Hb, r.Wb});
  d["frame_type"] = own(std::move(r.frame_type), {T});
  d["pts"] = own(std::move(r.pts), {T});
  d["gop_index"] = own(std::move(r.gop_index), {T});
  d["frame_index"] = own(std::move(r.frame_index), {T});
  d["decode_errors"] = own(std::move(r.corrupt), {T});
  if (!r.residual.empty() || T == 0)
    d["residual"] = own(std::move(r.residual), {T, 3, H, W});
  else
    d["residual"] = py::none();
  const py::ssize_t K = static_cast<py::ssize_t>(r.rgb_index.size());
  d["rgb"] = own(std::move(r.rgb), {K, 3, H, W});
  d["rgb_index"] = own(std::move(r.rgb_index), {K});
  d["total_decoded"] = r.total_decoded;
  d["parallel"] = r.parallel_used;
  d["block"] = r.block;
  d["width"] = r.W;
  d["height"] = r.H;
  d["fps"] = r.info.fps;
  d["time_base"] = py::make_tuple(r.info.time_base_num, r.info.time_base_den);
  return d;
}

mv::ReadOptions make_options(int block, bool residual, int rgb, bool accumulate,
                             int fill_iframe, int b_list, int threads,
                             bool fast, std::vector<int64_t> frames) {
  mv::ReadOptions o;
  o.block = block;
  o.residual = residual;
  o.rgb = rgb;
  o.accumulate = accumulate;
  o.fill_iframe = fill_iframe;
  o.b_list = b_list;
  o.threads = threads;
  o.fast = fast;
  o.frames = std::move(frames);
  return o;
}

}  // namespace

PYBIND11_MODULE(_video, m) {
  m.doc() = "mvaccel's FFmpeg reader (compressed-domain video)";
  static py::exception<mv::VideoError> video_error(m, "VideoError",
                                                   PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const mv::VideoError& e) {
      py::set_error(video_error, e.what());
    } catch (const mv::ArgumentError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const mv::MissingFileError& e) {
      PyErr_SetString(PyExc_FileNotFoundError, e.what());
    }
  });

  m.def(
      "buffer_cache",
      [](bool clear) {
        if (clear) mv::BlockCache::clear();
        mv::CacheStats s = mv::BlockCache::stats();
        py::dict d;
        d["held"] = s.held;
        d["limit"] = s.limit;
        d["hits"] = s.hits;
        d["misses"] = s.misses;
        return d;
      },
      py::arg("clear") = false,
      "The reader's cache of pixel blocks: bytes held and limit "
      "(MVACCEL_READER_CACHE_MB), hits and misses; clear=True frees it first.");

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

  m.def(
      "probe",
      [](const std::string& path, bool decode) {
        mv::ProbeResult r;
        {
          py::gil_scoped_release nogil;
          r = mv::probe(path, decode);
        }
        py::dict d = info_dict(r.info);
        d["num_packets"] = r.num_packets;
        d["key_packets"] = r.key_packets;
        d["key_frames"] = r.key_frames;
        d["chunks_independent"] = r.chunks_independent;
        d["decoded"] = r.decoded;
        const py::ssize_t n = static_cast<py::ssize_t>(r.frame_types.size());
        d["frame_types"] = own(std::move(r.frame_types), {n});
        d["pts"] = own(std::move(r.pts), {n});
        return d;
      },
      py::arg("path"), py::arg("decode") = true,
      "Stream facts; with decode, every frame's type and pts (a decode in "
      "the fast motion-vector mode).");

  m.def(
      "read",
      [](const std::string& path, int block, bool residual, int rgb,
         bool accumulate, int fill_iframe, int b_list, int threads, bool fast,
         std::vector<int64_t> frames) {
        mv::ReadOptions o =
            make_options(block, residual, rgb, accumulate, fill_iframe, b_list,
                         threads, fast, std::move(frames));
        mv::ClipResult r;
        {
          py::gil_scoped_release nogil;
          r = mv::read_clip(path, o);
        }
        return clip_dict(std::move(r));
      },
      py::arg("path"), py::arg("block") = 8, py::arg("residual") = false,
      py::arg("rgb") = 0, py::arg("accumulate") = false,
      py::arg("fill_iframe") = 0, py::arg("b_list") = 0, py::arg("threads") = 1,
      py::arg("fast") = true, py::arg("frames") = std::vector<int64_t>{},
      "Motion vectors on the block grid (and residuals, RGB) of a video; "
      "see mvaccel.video.read_motion.");

  py::class_<mv::GopReader>(m, "GopReader")
      .def(py::init([](const std::string& path) {
             py::gil_scoped_release nogil;
             return new mv::GopReader(path);
           }),
           py::arg("path"))
      .def_property_readonly(
          "info", [](const mv::GopReader& g) { return info_dict(g.info()); })
      .def_property_readonly("key_packets", &mv::GopReader::key_packets)
      .def_property_readonly("key_frames", &mv::GopReader::key_frames)
      .def_property_readonly("num_packets", &mv::GopReader::num_packets)
      .def(
          "read",
          [](mv::GopReader& g, int64_t first, int64_t last, int block,
             bool residual, int rgb, bool accumulate, int fill_iframe,
             int b_list, std::vector<int64_t> frames) {
            mv::ReadOptions o =
                make_options(block, residual, rgb, accumulate, fill_iframe,
                             b_list, 1, true, std::move(frames));
            mv::ClipResult r;
            {
              py::gil_scoped_release nogil;
              r = g.read(first, last, o);
            }
            return clip_dict(std::move(r));
          },
          py::arg("first"), py::arg("last"), py::arg("block") = 8,
          py::arg("residual") = false, py::arg("rgb") = 0,
          py::arg("accumulate") = false, py::arg("fill_iframe") = 0,
          py::arg("b_list") = 0, py::arg("frames") = std::vector<int64_t>{},
          "Decode key-frame chunks [first, last] only.");
}
