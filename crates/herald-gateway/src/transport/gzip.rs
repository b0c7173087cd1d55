//! gzip for the streaming responses, when the node allows it (`client.stream_gzip`) and
//! the client accepts it. Each chunk is compressed and flushed at once (a sync flush),
//! so compression never holds a message back; what it saves comes from the repetition
//! across messages (keys, channel names, similar payloads) that one deflate window sees.

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;

/// Whether an `Accept-Encoding` value accepts gzip (listed, and not with `q=0`).
pub(crate) fn accepted(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        name.eq_ignore_ascii_case("gzip") && !refused
    })
}

/// One response's compressor.
pub(crate) struct Gzip {
    encoder: Option<GzEncoder<Vec<u8>>>,
}

impl Gzip {
    /// A compressor at the fastest level: latency and CPU matter more here than the
    /// last few percent of size.
    pub(crate) fn new() -> Self {
        Self {
            encoder: Some(GzEncoder::new(Vec::new(), Compression::fast())),
        }
    }

    /// Compresses one chunk and flushes it.
    pub(crate) fn chunk(&mut self, data: &[u8]) -> Bytes {
        let Some(encoder) = self.encoder.as_mut() else {
            return Bytes::new();
        };
        // Writing into a Vec cannot fail.
        if encoder
            .write_all(data)
            .and_then(|()| encoder.flush())
            .is_err()
        {
            return Bytes::new();
        }
        Bytes::from(std::mem::take(encoder.get_mut()))
    }

    /// The end of the compressed stream (its trailer).
    pub(crate) fn finish(&mut self) -> Bytes {
        self.encoder
            .take()
            .and_then(|e| e.finish().ok())
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        assert!(accepted("gzip"));
        assert!(accepted("gzip, deflate, br, zstd"));
        assert!(accepted("br;q=1.0, GZIP;q=0.5"));
        assert!(!accepted("gzip;q=0"));
        assert!(!accepted("deflate, br"));
        assert!(!accepted(""));
    }

    #[test]
    fn each_chunk_is_readable_as_soon_as_it_is_written() {
        let mut gzip = Gzip::new();
        let mut wire = Vec::new();
        let messages = ["{\"push\":{\"channel\":\"news\"}}\n"; 3];
        for message in messages {
            wire.extend_from_slice(&gzip.chunk(message.as_bytes()));
            // Everything written so far decodes, without the trailer.
            let mut decoder = GzDecoder::new(&wire[..]);
            let mut out = Vec::new();
            let _ = decoder.read_to_end(&mut out);
            assert!(out.ends_with(message.as_bytes()));
        }
        wire.extend_from_slice(&gzip.finish());
        let mut out = String::new();
        GzDecoder::new(&wire[..])
            .read_to_string(&mut out)
            .expect("a complete stream");
        assert_eq!(out, messages.concat());
    }
}
