//! Reading a small input file (a project's `ws.toml`, a user's or the daemon's
//! configuration, a TLS certificate or key, an access token) so that nothing a
//! user names can make the daemon wait or fill its memory: opened without
//! blocking (a FIFO would wait for a writer), refused unless it is a regular
//! file, and read only up to [`MAX_INPUT_BYTES`].

use std::io::Read;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

/// The most an input file may hold: far more than any configuration needs.
pub const MAX_INPUT_BYTES: u64 = 1 << 20;

/// The content of the input file `path`, `None` if it does not exist. Fails,
/// naming the file and the cause, if it is not a regular file or holds more
/// than [`MAX_INPUT_BYTES`]. Opens with the calling thread's credentials
/// (see `access::read_file_as` for a caller's).
pub fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a regular file; give the path of a file",
                path.display(),
                describe(kind)
            ),
        ));
    }
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} holds more than {} KiB, the most an input file may; is it the right file?",
                path.display(),
                MAX_INPUT_BYTES >> 10
            ),
        )
    };
    if st.st_size as u64 > MAX_INPUT_BYTES {
        return Err(too_big());
    }
    // Its size may change after the fstat: read one byte past the limit.
    let mut bytes = Vec::with_capacity(st.st_size as usize);
    std::fs::File::from(fd)
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(too_big());
    }
    Ok(Some(bytes))
}

fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Socket => "a socket",
        _ => "not a regular file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(path: &Path) -> String {
        read(path).unwrap_err().to_string()
    }

    #[test]
    fn a_regular_file_is_read_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ws.toml"), "x = 1\n").unwrap();
        assert_eq!(
            read(&dir.path().join("ws.toml")).unwrap().unwrap(),
            b"x = 1\n"
        );
        assert_eq!(read(&dir.path().join("missing")).unwrap(), None);
    }

    #[test]
    fn a_fifo_a_device_and_a_directory_are_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No writer: a blocking open would wait here for ever.
        assert!(
            refused(&fifo).contains("is a FIFO, not a regular file"),
            "{}",
            refused(&fifo)
        );
        let zero = Path::new("/dev/zero");
        assert!(
            refused(zero).contains("/dev/zero is a character device"),
            "{}",
            refused(zero)
        );
        assert!(refused(dir.path()).contains("is a directory"));
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; MAX_INPUT_BYTES as usize + 1]).unwrap();
        assert!(
            refused(&big).contains("more than 1024 KiB"),
            "{}",
            refused(&big)
        );
        std::fs::write(&big, vec![b'#'; MAX_INPUT_BYTES as usize]).unwrap();
        assert_eq!(read(&big).unwrap().unwrap().len() as u64, MAX_INPUT_BYTES);
    }
}
