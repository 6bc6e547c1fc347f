#!/usr/bin/python3
"""Small RTSP test server for the camera-source integration tests.

    serve.py --port PORT [--file VIDEO.mp4] [--path /cam] [--codec h264|h265]
             [--user U --password P] [--stall-after SECONDS]
             [--drop-after SECONDS]

Serves rtsp://127.0.0.1:PORT/PATH (RTP over TCP-interleaved or UDP, pt 96).
Prints exactly one line "ready rtsp://127.0.0.1:PORT/PATH" on stdout once
listening (with --port 0 the kernel picks a free port and the line shows it).
Exits cleanly on SIGTERM / SIGINT.  Needs Debian's /usr/bin/python3 with
python3-gi and the GStreamer packages from install.sh.

How it works:
  * A "producer" pipeline decodes the MP4 at real time and loops it gaplessly
    (segment seeks), feeding raw frames into an intervideosink.  Without
    --file a live videotestsrc (640x352, 25 fps) is used instead.
  * The RTSP media (shared by all clients) reads those frames with
    intervideosrc, re-encodes them with x264enc/x265enc (ultrafast, zero
    latency, key frame every 25 frames) and pays them with SPS/PPS (VPS)
    in-band before every key frame.  The media is live, so a client that
    (re)connects simply joins the running stream.
  * --stall-after S: S seconds after a media starts playing, a valve in
    front of the payloader starts dropping everything.  RTSP session, TCP
    connection and RTCP stay alive; RTP packets stop.  A media created
    later (after every client has left) streams again for S seconds.
  * --drop-after S: S seconds after a media starts playing, every fifth
    encoded frame that is not a key frame is dropped before it is paid: the
    frames after it refer to a picture the client never gets, so they do not
    decode until the next key frame (every 25 frames).
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

loop = GLib.MainLoop()  # quit by SIGTERM/SIGINT or a producer error

ENCODERS = {
    # Key frame every 25 frames; no B-frames (ultrafast => constrained baseline).
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 "
            "! video/x-h264,stream-format=byte-stream "
            "! valve name=stall drop=false "
            "! rtph264pay name=pay0 pt=96 config-interval=-1",
    "h265": "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=25 "
            "! video/x-h265,stream-format=byte-stream "
            "! valve name=stall drop=false "
            "! rtph265pay name=pay0 pt=96 config-interval=-1",
}


def log(msg):
    print(f"serve.py: {msg}", file=sys.stderr, flush=True)


def start_producer(path):
    """Decode `path` in a loop at real time into intervideosink channel "cam".

    Returns (pipeline, caps string of the raw frames)."""
    pipe = Gst.parse_launch(
        "filesrc name=file ! qtdemux ! h264parse ! avdec_h264 "
        "! videoconvert ! video/x-raw,format=I420 "
        "! intervideosink name=sink channel=cam sync=true")
    pipe.get_by_name("file").set_property("location", path)
    pipe.set_state(Gst.State.PAUSED)
    ret, _, _ = pipe.get_state(10 * Gst.SECOND)  # preroll: validates the file
    if ret == Gst.StateChangeReturn.FAILURE:
        sys.exit(f"serve.py: cannot decode {path}")
    caps = pipe.get_by_name("sink").get_static_pad("sink").get_current_caps()
    s = caps.get_structure(0)
    _, num, den = s.get_fraction("framerate")
    if num == 0:  # variable frame rate: fall back to 25 fps
        num, den = 25, 1
    raw = (f"video/x-raw,format=I420,width={s.get_int('width')[1]},"
           f"height={s.get_int('height')[1]},framerate={num}/{den}")

    # Gapless loop: a flushing segment seek starts the first pass; every
    # SEGMENT_DONE triggers a non-flushing segment seek back to 0, so the
    # running time keeps increasing and the sink keeps syncing to the clock.
    def seek(flush):
        flags = Gst.SeekFlags.SEGMENT
        if flush:
            flags |= Gst.SeekFlags.FLUSH
        pipe.seek_simple(Gst.Format.TIME, flags, 0)

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.SEGMENT_DONE:
            seek(False)
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            log(f"producer error: {err.message} ({dbg})")
            loop.quit()
        return True

    bus = pipe.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    seek(True)  # stays PAUSED (no CPU) until a client's media needs frames
    return pipe, raw


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True, help="0 = pick a free port")
    ap.add_argument("--file", help="MP4 with H.264 video; absent = test pattern")
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--codec", choices=ENCODERS, default="h264")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--stall-after", type=float, metavar="SECONDS")
    ap.add_argument("--drop-after", type=float, metavar="SECONDS")
    args = ap.parse_args()
    if (args.user is None) != (args.password is None):
        ap.error("--user and --password go together")
    if not args.path.startswith("/"):
        args.path = "/" + args.path

    Gst.init(None)

    producer = None
    if args.file:
        producer, raw = start_producer(args.file)
        # intervideosrc repeats the last frame if the producer is late;
        # timeout is huge so it never switches to black frames.
        src = f"intervideosrc channel=cam timeout={2**62} ! {raw}"
    else:
        src = ("videotestsrc is-live=true pattern=ball "
               "! video/x-raw,format=I420,width=640,height=352,framerate=25/1")

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {src} ! {ENCODERS[args.codec]} )")
    factory.set_shared(True)  # every client joins the same live stream

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, factory)

    if args.user is not None:
        # Basic auth: only this user's token has the "cam" role, and only that
        # role may access/construct the media.  Anything else gets 401.
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "cam")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("cam", "media.factory.access", True)
        perms.add_permission_for_role("cam", "media.factory.construct", True)
        factory.set_permissions(perms)

    medias = set()  # live medias; the producer only runs while one exists

    def set_active(media, on):
        # Runs in the main loop (signals may come from streaming threads).
        (medias.add if on else medias.discard)(media)
        if producer is not None:
            producer.set_state(Gst.State.PLAYING if medias else Gst.State.PAUSED)
        return False

    def on_configure(_factory, media):
        GLib.idle_add(set_active, media, True)
        media.connect("unprepared", lambda m: GLib.idle_add(set_active, m, False))
        valve = media.get_element().get_by_name("stall")
        if args.drop_after is not None:
            dropping = {"on": False, "deltas": 0}

            def drop(_pad, info):
                buffer = info.get_buffer()
                if not dropping["on"] or not buffer.has_flags(Gst.BufferFlags.DELTA_UNIT):
                    return Gst.PadProbeReturn.OK
                dropping["deltas"] += 1
                if dropping["deltas"] % 5 == 0:
                    return Gst.PadProbeReturn.DROP
                return Gst.PadProbeReturn.OK

            def start_dropping():
                log("dropping every fifth delta frame now")
                dropping["on"] = True
                return False

            valve.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, drop)
            GLib.timeout_add(int(args.drop_after * 1000), start_dropping)
        if args.stall_after is None:
            return
        started = []

        def stall():
            log("stalling: RTP packets stop now")
            valve.set_property("drop", True)
            return False

        def on_state(_media, state):
            if state == Gst.State.PLAYING and not started:
                started.append(True)
                GLib.timeout_add(int(args.stall_after * 1000), stall)

        media.connect("new-state", on_state)

    factory.connect("media-configure", on_configure)

    if server.attach(None) == 0:
        sys.exit(f"serve.py: cannot listen on 127.0.0.1:{args.port}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)

    print(f"ready rtsp://127.0.0.1:{server.get_bound_port()}{args.path}", flush=True)
    loop.run()

    if producer is not None:
        producer.set_state(Gst.State.NULL)


if __name__ == "__main__":
    main()
