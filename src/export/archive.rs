//! The archive's framing: POSIX pax tar (ustar headers, each entry preceded by a pax extended
//! header that carries its exact path, size and mtime). Every byte is a function of the entry
//! (path, size, mtime) alone, so a rerun after a crash writes the same archive, and the writer
//! can restart in the middle of an entry knowing only how many of its bytes were written.

const BLOCK: u64 = 512;

/// Where an object version goes in the archive. `Current` exports put each key under
/// `objects/`; `All` exports put each version under `versions/<versionId>/`, so two versions
/// of a key never collide. The path is the key, made safe to extract: `%` becomes `%25`, an
/// empty segment (a leading, trailing or doubled `/`) becomes `%2F`, and a `.` or `..` segment
/// has its dots written `%2E`, so no member escapes its directory or is a directory itself. The
/// manifest maps every path to its key and version.
pub fn path(key: &str, version_id: Option<&str>) -> String {
    let mut out = match version_id {
        None => "objects/".to_owned(),
        Some(v) => format!("versions/{}/", escape_segment(v)),
    };
    let segments: Vec<String> = key.split('/').map(escape_segment).collect();
    out.push_str(&segments.join("/"));
    out
}

fn escape_segment(segment: &str) -> String {
    match segment {
        "" => "%2F".to_owned(),
        "." | ".." => segment.replace('.', "%2E"),
        _ => segment.replace('%', "%25"),
    }
}

/// One archive member: a regular file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub path: String,
    pub size: u64,
    /// Seconds since the epoch: the version's `LastModified`.
    pub mtime: i64,
}

impl Member {
    /// The bytes before the content: the pax header and its records, then the ustar header.
    pub fn header(&self) -> Vec<u8> {
        let records = self.pax_records();
        let mut out = ustar_header("PaxHeader", records.len() as u64, 0, b'x');
        out.extend_from_slice(&records);
        pad(&mut out);
        out.extend(ustar_header(
            &self.path,
            self.size.min(OCTAL_11_MAX),
            self.mtime,
            b'0',
        ));
        out
    }

    /// Zero bytes after the content, to the next 512-byte block.
    pub fn padding(&self) -> u64 {
        (BLOCK - self.size % BLOCK) % BLOCK
    }

    fn pax_records(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(pax_record("path", &self.path));
        out.extend(pax_record("mtime", &self.mtime.to_string()));
        out.extend(pax_record("size", &self.size.to_string()));
        out
    }
}

/// The end of an archive: two zero blocks.
pub const END: [u8; 1024] = [0; 1024];

/// The largest value an 11-digit octal field holds (8 GiB - 1); larger sizes are in the pax
/// header, which readers prefer.
const OCTAL_11_MAX: u64 = 0o777_7777_7777;

/// `"<len> <key>=<value>\n"`, where `<len>` counts the whole record including itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}").into_bytes()
}

fn ustar_header(name: &str, size: u64, mtime: i64, kind: u8) -> Vec<u8> {
    let mut h = vec![0u8; BLOCK as usize];
    // The full path is in the pax header; the ustar name is a readable prefix of it.
    let mut cut = name.len().min(100);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    h[..cut].copy_from_slice(&name.as_bytes()[..cut]);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(
        &mut h[136..148],
        u64::try_from(mtime).unwrap_or(0).min(OCTAL_11_MAX),
    );
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// Zero-padded octal digits filling the field but its last byte, which is NUL.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

fn pad(out: &mut Vec<u8>) {
    let rest = (BLOCK - out.len() as u64 % BLOCK) % BLOCK;
    out.resize(out.len() + rest as usize, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_keys_but_never_escape_or_make_directories() {
        assert_eq!(path("users/42/a.json", None), "objects/users/42/a.json");
        assert_eq!(path("a", Some("v1")), "versions/v1/a");
        assert_eq!(
            path("../../etc/passwd", None),
            "objects/%2E%2E/%2E%2E/etc/passwd"
        );
        assert_eq!(path("/abs//x/", None), "objects/%2F/abs/%2F/x/%2F");
        assert_eq!(path("100%/./x", None), "objects/100%25/%2E/x");
        assert_eq!(path("a", Some("..")), "versions/%2E%2E/a");
        // Distinct keys, distinct paths.
        assert_ne!(path("a/%2F", None), path("a/", None));
    }

    #[test]
    fn pax_records_count_their_own_length() {
        for value in [
            "",
            "x",
            &"y".repeat(90),
            &"z".repeat(994),
            &"w".repeat(9990),
        ] {
            let r = pax_record("path", value);
            let text = String::from_utf8(r.clone()).expect("utf-8");
            let (len, _) = text.split_once(' ').expect("length");
            assert_eq!(len.parse::<usize>().expect("number"), r.len(), "{text}");
        }
    }

    #[test]
    fn members_are_whole_blocks_and_headers_are_valid_ustar() {
        let m = Member {
            path: format!("objects/{}", "k".repeat(300)),
            size: 1000,
            mtime: 1_700_000_000,
        };
        let header = m.header();
        assert_eq!(header.len() % 512, 0);
        assert_eq!((header.len() as u64 + m.size + m.padding()) % 512, 0);
        assert_eq!(m.padding(), 24);
        let ustar = &header[header.len() - 512..];
        assert_eq!(&ustar[257..263], b"ustar\0");
        assert_eq!(ustar[156], b'0');
        assert_eq!(&ustar[124..136], b"00000001750\0");
        // The checksum: the sum of the header's bytes with the field as spaces.
        let mut copy = ustar.to_vec();
        copy[148..156].copy_from_slice(b"        ");
        let sum: u32 = copy.iter().map(|b| u32::from(*b)).sum();
        let field = std::str::from_utf8(&ustar[148..154]).expect("octal");
        assert_eq!(u32::from_str_radix(field, 8).expect("octal"), sum);
        let pax = String::from_utf8_lossy(&header[512..1024]);
        assert!(pax.contains(&format!(" path={}\n", m.path)), "{pax}");
        assert!(pax.contains(" size=1000\n") && pax.contains(" mtime=1700000000\n"));
    }

    #[test]
    fn the_same_member_frames_the_same_bytes() {
        let m = Member {
            path: "objects/a".into(),
            size: 0,
            mtime: 1,
        };
        assert_eq!(m.header(), m.clone().header());
        assert_eq!(m.header().len(), 512 * 3);
    }
}
