//! TLS handshake records carried inside TDS PRELOGIN (0x12) packets, as TDS
//! 7.x requires ([MS-TDS] 2.2.6.5 and 3.2.5.1 "Sent Initial PRELOGIN Packet
//! State": the handshake payload travels as the data of 0x12 packets, in both
//! directions).
//!
//! [`PreloginWrapper`] sits between the TLS engine and the socket. While the
//! handshake runs it adds an 8-byte 0x12 header to every outgoing flight (split
//! at the packet size, EOM on the last packet of each flush) and strips the
//! headers of incoming packets, concatenating their payloads; TLS record and
//! packet boundaries need not line up. After the handshake the caller switches
//! it to pass bytes straight through.
//!
//! Reads never take more from the socket than the current packet (or, in the
//! record-bounded mode used for login-only encryption, the current TLS record)
//! needs, so abandoning the TLS session loses no byte. Buffers are bounded by
//! one packet.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::trace;

use super::error::{framing_io, FramingError};

/// Largest packet accepted on input. [MS-TDS] 2.2.6.4 caps the negotiated
/// packet size at 32767 bytes.
pub const MAX_PACKET_LEN: u16 = 32767;

/// Smallest packet size tdsguard writes. [MS-TDS] 2.2.6.4: 512 is the lowest
/// legal packet size.
pub const MIN_PACKET_SIZE: usize = 512;

/// Largest TLS record on input: 2^14 plaintext plus 2048 bytes of expansion
/// (RFC 5246 6.2.3, the TLS 1.2 ciphertext bound; TLS 1.3 allows less).
pub const MAX_TLS_RECORD_LEN: u16 = 16384 + 2048;

// TODO(tdsguard): use crate::tds::packet once merged
/// Packet type PRELOGIN ([MS-TDS] 2.2.3.1.1).
const PACKET_TYPE_PRELOGIN: u8 = 0x12;
/// Status bit "end of message" ([MS-TDS] 2.2.3.1.2).
const STATUS_EOM: u8 = 0x01;
/// Packet header length ([MS-TDS] 2.2.3).
const HEADER_LEN: usize = 8;
/// TLS record header: type, version, length (RFC 8446 5.1).
const TLS_RECORD_HEADER_LEN: usize = 5;

/// A PRELOGIN packet header: type, status, BE length, SPID 0, packet id,
/// window 0 ([MS-TDS] 2.2.3).
// TODO(tdsguard): use crate::tds::packet once merged
fn prelogin_header(eom: bool, len: u16, packet_id: u8) -> [u8; HEADER_LEN] {
    let status = if eom { STATUS_EOM } else { 0x00 };
    let [len_hi, len_lo] = len.to_be_bytes();

    [
        PACKET_TYPE_PRELOGIN,
        status,
        len_hi,
        len_lo,
        0,
        0,
        packet_id,
        0,
    ]
}

/// What the wrapper does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TLS handshake: every byte is wrapped in / unwrapped from 0x12 packets.
    Handshake,
    /// Full encryption after the handshake: bytes pass straight through.
    Passthrough,
    /// Login-only encryption after the handshake: bytes pass through, but a
    /// read never crosses a TLS record boundary, so the session can be dropped
    /// after the login without swallowing the plaintext that follows.
    RecordBounded,
}

/// The I/O adapter between a TLS engine and the socket for TDS 7.x.
#[derive(Debug)]
pub struct PreloginWrapper<S> {
    inner: S,
    phase: Phase,
    packet_size: usize,

    /// Incoming packet header being read, and payload bytes still to hand out.
    header: [u8; HEADER_LEN],
    header_filled: usize,
    payload_left: usize,

    /// Bytes read while handshaking that turned out not to start a 0x12
    /// packet; replayed after the switch, an error if the handshake goes on.
    stash: Vec<u8>,

    /// Record-bounded mode: header bytes seen and body bytes still to pass.
    record_header: [u8; TLS_RECORD_HEADER_LEN],
    record_header_filled: usize,
    record_left: usize,

    /// Outgoing payload not yet packetised, and packets not yet written.
    payload: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    packet_id: u8,
}

impl<S> PreloginWrapper<S> {
    /// Wraps `inner` for a handshake, writing packets of at most
    /// `packet_size` bytes (clamped to 512..=32767).
    pub fn new(inner: S, packet_size: usize) -> Self {
        let packet_size = packet_size.clamp(MIN_PACKET_SIZE, MAX_PACKET_LEN as usize);

        PreloginWrapper {
            inner,
            phase: Phase::Handshake,
            packet_size,
            header: [0; HEADER_LEN],
            header_filled: 0,
            payload_left: 0,
            stash: Vec::new(),
            record_header: [0; TLS_RECORD_HEADER_LEN],
            record_header_filled: 0,
            record_left: 0,
            payload: Vec::with_capacity(packet_size - HEADER_LEN),
            out: Vec::with_capacity(packet_size),
            out_pos: 0,
            packet_id: 1,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Ends the wrapping once the TLS engine reports the handshake complete.
    /// `login_only` selects [`Phase::RecordBounded`] for a session that will be
    /// abandoned after LOGIN7 ([MS-TDS] 2.2.6.5, ENCRYPT_OFF on both sides).
    pub fn handshake_done(&mut self, login_only: bool) {
        self.phase = if login_only {
            Phase::RecordBounded
        } else {
            Phase::Passthrough
        };
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Whether a TLS record has been partly handed to the TLS engine.
    pub fn is_mid_record(&self) -> bool {
        self.record_header_filled > 0 || self.record_left > 0
    }

    /// Gives back the stream and the bytes already read from it but not yet
    /// handed on. Call it only between TLS records (see
    /// [`PreloginWrapper::is_mid_record`]); unwritten output is dropped.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.inner, self.stash)
    }

    fn max_payload(&self) -> usize {
        self.packet_size - HEADER_LEN
    }

    /// Moves the pending payload into the output buffer as one packet.
    fn seal_packet(&mut self, eom: bool) {
        let len = (self.payload.len() + HEADER_LEN) as u16;

        self.out.clear();
        self.out_pos = 0;
        self.out
            .extend_from_slice(&prelogin_header(eom, len, self.packet_id));
        self.out.append(&mut self.payload);
        self.packet_id = self.packet_id.wrapping_add(1);
        trace!(packet.len = len, packet.eom = eom, "prelogin packet out");
    }

    /// Parses a complete incoming header.
    fn accept_header(&mut self) -> io::Result<()> {
        let len = u16::from_be_bytes([self.header[2], self.header[3]]);
        if usize::from(len) < HEADER_LEN || len > MAX_PACKET_LEN {
            return Err(framing_io(FramingError::BadPacketLength(len)));
        }

        self.header_filled = 0;
        self.payload_left = usize::from(len) - HEADER_LEN;
        trace!(
            packet.len = len,
            packet.status = self.header[1],
            "prelogin packet in"
        );
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> PreloginWrapper<S> {
    /// Reads from the stash first, then from the stream, into `dst`.
    fn poll_read_raw(&mut self, cx: &mut Context<'_>, dst: &mut [u8]) -> Poll<io::Result<usize>> {
        if !self.stash.is_empty() {
            let n = dst.len().min(self.stash.len());
            dst[..n].copy_from_slice(&self.stash[..n]);
            self.stash.drain(..n);
            return Poll::Ready(Ok(n));
        }

        let mut buf = ReadBuf::new(dst);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    }

    /// Reads at most `limit` bytes into the unfilled part of `buf`.
    fn poll_read_limited(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        let want = limit.min(buf.remaining());
        let dst = buf.initialize_unfilled_to(want);
        let n = ready!(self.poll_read_raw(cx, dst))?;

        buf.advance(n);
        Poll::Ready(Ok(n))
    }

    /// Fills the packet header. `Ok(false)` is a clean end of stream.
    fn poll_fill_header(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        while self.header_filled < HEADER_LEN {
            let mut buf = ReadBuf::new(&mut self.header[self.header_filled..]);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();

            if n == 0 && self.header_filled == 0 {
                return Poll::Ready(Ok(false));
            }
            if n == 0 {
                return Poll::Ready(Err(framing_io(FramingError::EndOfStreamInPacket)));
            }
            self.header_filled += n;

            if self.header[0] != PACKET_TYPE_PRELOGIN {
                return self.stash_non_packet(cx);
            }
        }

        self.accept_header()?;
        Poll::Ready(Ok(true))
    }

    /// Keeps bytes that do not start a 0x12 packet. Right after the last
    /// handshake message the TLS engine may still try a read, and a TLS 1.3
    /// client can already have sent its first application record: those bytes
    /// belong to the phase after the switch. If the handshake is in fact not
    /// over, the next read reports them as a framing error.
    fn stash_non_packet(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.stash
            .extend_from_slice(&self.header[..self.header_filled]);
        self.header_filled = 0;

        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_read_handshake(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if let Some(&first) = self.stash.first() {
                return Poll::Ready(Err(framing_io(FramingError::UnexpectedPacketType(first))));
            }

            if self.payload_left > 0 {
                return self.poll_read_payload(cx, buf);
            }

            if !ready!(self.poll_fill_header(cx))? {
                return Poll::Ready(Ok(()));
            }
        }
    }

    fn poll_read_payload(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(self.poll_read_limited(cx, buf, self.payload_left))?;
        if n == 0 && buf.remaining() > 0 {
            return Poll::Ready(Err(framing_io(FramingError::EndOfStreamInPacket)));
        }

        self.payload_left -= n;
        Poll::Ready(Ok(()))
    }

    /// Passes bytes on without ever reading past the current TLS record.
    fn poll_read_record(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.record_left > 0 {
            let n = ready!(self.poll_read_limited(cx, buf, self.record_left))?;
            self.record_left -= n;
            return Poll::Ready(Ok(()));
        }

        let before = buf.filled().len();
        let want = TLS_RECORD_HEADER_LEN - self.record_header_filled;
        ready!(self.poll_read_limited(cx, buf, want))?;

        let got = &buf.filled()[before..];
        let start = self.record_header_filled;
        self.record_header[start..start + got.len()].copy_from_slice(got);
        self.record_header_filled += got.len();

        if self.record_header_filled == TLS_RECORD_HEADER_LEN {
            self.accept_record_header()?;
        }
        Poll::Ready(Ok(()))
    }

    fn accept_record_header(&mut self) -> io::Result<()> {
        let len = u16::from_be_bytes([self.record_header[3], self.record_header[4]]);
        if len > MAX_TLS_RECORD_LEN {
            return Err(framing_io(FramingError::RecordTooLong(len)));
        }

        self.record_header_filled = 0;
        self.record_left = usize::from(len);
        Ok(())
    }
}

impl<S: AsyncWrite + Unpin> PreloginWrapper<S> {
    /// Writes out the packet in the output buffer, if any.
    fn poll_drain_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let pending = &self.out[self.out_pos..];
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }

        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write_handshake(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain_out(cx))?;

        // Seal a full packet only when more data follows, so the last packet
        // of a flight is the one that gets EOM at flush time.
        if self.payload.len() == self.max_payload() {
            self.seal_packet(false);
            ready!(self.poll_drain_out(cx))?;
        }

        let n = buf.len().min(self.max_payload() - self.payload.len());
        self.payload.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    /// Writes out everything buffered, the last packet with EOM.
    fn poll_finish_packets(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain_out(cx))?;

        if !self.payload.is_empty() {
            self.seal_packet(true);
            ready!(self.poll_drain_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PreloginWrapper<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();

        match this.phase {
            Phase::Handshake => this.poll_read_handshake(cx, buf),
            Phase::RecordBounded => this.poll_read_record(cx, buf),
            Phase::Passthrough => this.poll_read_limited(cx, buf, usize::MAX).map_ok(|_| ()),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreloginWrapper<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.phase == Phase::Handshake {
            return this.poll_write_handshake(cx, buf);
        }

        ready!(this.poll_finish_packets(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_finish_packets(cx))?;

        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_finish_packets(cx))?;

        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Splits a byte stream of TDS packets into (type, status, payload).
    fn split_packets(mut bytes: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
        let mut packets = Vec::new();
        while bytes.len() >= HEADER_LEN {
            let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
            packets.push((bytes[0], bytes[1], bytes[HEADER_LEN..len].to_vec()));
            bytes = &bytes[len..];
        }
        assert!(bytes.is_empty(), "trailing bytes after the last packet");
        packets
    }

    #[tokio::test]
    async fn a_flight_is_split_at_the_packet_size_with_eom_last() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut wrapper = PreloginWrapper::new(near, MIN_PACKET_SIZE);
        let flight: Vec<u8> = (0..1200u32).map(|i| i as u8).collect();

        wrapper.write_all(&flight).await.unwrap();
        wrapper.flush().await.unwrap();
        drop(wrapper);
        let mut wire = Vec::new();
        far.read_to_end(&mut wire).await.unwrap();

        let packets = split_packets(&wire);
        let sizes: Vec<usize> = packets.iter().map(|p| p.2.len()).collect();
        assert_eq!(sizes, vec![504, 504, 192]);
        assert!(packets.iter().all(|p| p.0 == 0x12));
        assert_eq!(packets.iter().map(|p| p.1).collect::<Vec<_>>(), [0, 0, 1]);
        assert_eq!(packets.concat_payloads(), flight);
        assert_eq!(wire[6], 1, "first packet id");
        assert_eq!(wire[512 + 6], 2, "second packet id");
    }

    trait Payloads {
        fn concat_payloads(&self) -> Vec<u8>;
    }

    impl Payloads for Vec<(u8, u8, Vec<u8>)> {
        fn concat_payloads(&self) -> Vec<u8> {
            self.iter().flat_map(|p| p.2.clone()).collect()
        }
    }

    #[tokio::test]
    async fn an_exactly_full_packet_gets_eom_without_an_empty_packet() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut wrapper = PreloginWrapper::new(near, MIN_PACKET_SIZE);

        wrapper.write_all(&[7u8; 504]).await.unwrap();
        wrapper.flush().await.unwrap();
        drop(wrapper);
        let mut wire = Vec::new();
        far.read_to_end(&mut wire).await.unwrap();

        let packets = split_packets(&wire);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].1, STATUS_EOM);
    }

    #[tokio::test]
    async fn incoming_payloads_are_concatenated() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut wrapper = PreloginWrapper::new(near, 4096);

        let mut wire = Vec::new();
        wire.extend_from_slice(&prelogin_header(false, 11, 1));
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&prelogin_header(false, 8, 2));
        wire.extend_from_slice(&prelogin_header(true, 12, 3));
        wire.extend_from_slice(b"defg");
        far.write_all(&wire).await.unwrap();
        drop(far);

        let mut got = Vec::new();
        wrapper.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abcdefg");
    }

    #[tokio::test]
    async fn another_packet_type_during_the_handshake_is_an_error() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut wrapper = PreloginWrapper::new(near, 4096);
        far.write_all(&[0x10, 0x01, 0x00, 0x09, 0, 0, 1, 0, 0xAA])
            .await
            .unwrap();

        let err = wrapper.read(&mut [0u8; 64]).await.unwrap_err();
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<FramingError>());
        assert_eq!(inner, Some(&FramingError::UnexpectedPacketType(0x10)));
    }

    #[tokio::test]
    async fn a_bad_length_is_an_error() {
        for len in [0u16, 7, 0x8000] {
            let (near, mut far) = tokio::io::duplex(1024);
            let mut wrapper = PreloginWrapper::new(near, 4096);
            far.write_all(&prelogin_header(true, len, 1)).await.unwrap();

            let err = wrapper.read(&mut [0u8; 64]).await.unwrap_err();
            let inner = err.get_ref().and_then(|e| e.downcast_ref::<FramingError>());
            assert_eq!(inner, Some(&FramingError::BadPacketLength(len)));
        }
    }

    #[tokio::test]
    async fn end_of_stream_inside_a_packet_is_an_error() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut wrapper = PreloginWrapper::new(near, 4096);
        far.write_all(&prelogin_header(true, 20, 1)).await.unwrap();
        far.write_all(b"short").await.unwrap();
        drop(far);

        let mut got = Vec::new();
        let err = wrapper.read_to_end(&mut got).await.unwrap_err();
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<FramingError>());
        assert_eq!(inner, Some(&FramingError::EndOfStreamInPacket));
        assert_eq!(got, b"short");
    }

    #[tokio::test]
    async fn bytes_after_the_handshake_are_replayed_after_the_switch() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut wrapper = PreloginWrapper::new(near, 4096);
        far.write_all(&[0x17, 0x03, 0x03, 0x00, 0x02, 0xAB, 0xCD, 0xEF, 0x01])
            .await
            .unwrap();
        drop(far);

        // The first poll stashes the header bytes and yields; a handshake that
        // is over switches phase before reading again.
        let mut buf = [0u8; 16];
        let mut read_buf = ReadBuf::new(&mut buf);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let poll = Pin::new(&mut wrapper).poll_read(&mut cx, &mut read_buf);
        assert!(poll.is_pending());
        assert!(read_buf.filled().is_empty());

        wrapper.handshake_done(false);
        let mut got = Vec::new();
        wrapper.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [0x17, 0x03, 0x03, 0x00, 0x02, 0xAB, 0xCD, 0xEF, 0x01]);
    }

    #[tokio::test]
    async fn a_non_packet_during_the_handshake_fails_on_the_next_read() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut wrapper = PreloginWrapper::new(near, 4096);
        far.write_all(&[0x17, 0x03, 0x03, 0x00, 0x02])
            .await
            .unwrap();

        let err = wrapper.read(&mut [0u8; 16]).await.unwrap_err();
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<FramingError>());
        assert_eq!(inner, Some(&FramingError::UnexpectedPacketType(0x17)));
    }

    #[tokio::test]
    async fn record_bounded_reads_stop_at_the_record_end() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut wrapper = PreloginWrapper::new(near, 4096);
        wrapper.handshake_done(true);
        far.write_all(&[0x17, 0x03, 0x03, 0x00, 0x03, 1, 2, 3, 0x04, 0x01, 0x00])
            .await
            .unwrap();

        let mut record = Vec::new();
        while record.len() < 8 {
            let mut buf = [0u8; 64];
            let n = wrapper.read(&mut buf).await.unwrap();
            record.extend_from_slice(&buf[..n]);
        }
        assert_eq!(record, [0x17, 0x03, 0x03, 0x00, 0x03, 1, 2, 3]);
        assert!(!wrapper.is_mid_record());

        let (mut raw, leftover) = wrapper.into_parts();
        assert!(leftover.is_empty());
        let mut rest = [0u8; 3];
        raw.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, [0x04, 0x01, 0x00]);
    }

    #[tokio::test]
    async fn an_oversized_record_is_an_error() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut wrapper = PreloginWrapper::new(near, 4096);
        wrapper.handshake_done(true);
        far.write_all(&[0x17, 0x03, 0x03, 0xFF, 0xFF])
            .await
            .unwrap();

        let err = wrapper.read(&mut [0u8; 64]).await.unwrap_err();
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<FramingError>());
        assert_eq!(inner, Some(&FramingError::RecordTooLong(0xFFFF)));
    }

    proptest::proptest! {
        #[test]
        fn wrapped_bytes_round_trip(
            flights in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 1..3000),
                1..4,
            ),
            packet_size in 512usize..2048,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (sent, received) = runtime.block_on(async {
                let (near, far) = tokio::io::duplex(64 * 1024);
                let mut writer = PreloginWrapper::new(near, packet_size);
                let mut reader = PreloginWrapper::new(far, 4096);
                for flight in &flights {
                    writer.write_all(flight).await.unwrap();
                    writer.flush().await.unwrap();
                }
                drop(writer);

                let mut received = Vec::new();
                reader.read_to_end(&mut received).await.unwrap();
                (flights.concat(), received)
            });
            proptest::prop_assert_eq!(sent, received);
        }
    }
}
