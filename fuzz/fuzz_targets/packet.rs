//! Packet framing: the reader splits any input into packets whose bytes are
//! exactly the input consumed, headers re-encode to the bytes read, and the
//! assembled payload re-packetises and reassembles to itself.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tdsguard::tds::packet::{encode_message, Assembled, MessageAssembler, PacketReader};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the piece size the stream is fed in.
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);

    let mut reader = PacketReader::new();
    let mut assembler = MessageAssembler::default();
    let mut consumed = Vec::new();
    for chunk in stream.chunks(piece) {
        reader.feed(chunk);
        while let Ok(Some(packet)) = reader.next_packet() {
            let mut header = BytesMut::new();
            packet.header.encode(&mut header);
            assert_eq!(&header[..], &packet.raw[..8]);
            assert_eq!(packet.raw.len(), usize::from(packet.header.length));
            consumed.extend_from_slice(&packet.raw);
            if let Ok(Some(Assembled::Message(message))) = assembler.push(&packet) {
                check_repacketise(&message);
            }
        }
    }
    assert_eq!(&consumed[..], &stream[..consumed.len()]);
});

fn check_repacketise(message: &tdsguard::tds::packet::Message) {
    let mut out = BytesMut::new();
    let size = 512;
    encode_message(
        message.packet_type,
        message.reset_flags,
        &message.payload,
        size,
        &mut out,
    )
    .unwrap();
    let mut reader = PacketReader::new();
    reader.feed(&out);
    let mut assembler = MessageAssembler::default();
    while let Some(packet) = reader.next_packet().unwrap() {
        if let Some(Assembled::Message(again)) = assembler.push(&packet).unwrap() {
            assert_eq!(again.payload, message.payload);
            assert_eq!(again.reset_flags, message.reset_flags);
            assert_eq!(reader.buffered(), 0);
            return;
        }
    }
    panic!("re-packetised message did not reassemble");
}
