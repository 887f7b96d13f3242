//! Tar archives written byte by byte (tar libraries refuse to write most hostile ones), and
//! compression.

/// Tar archives written byte by byte, since tar libraries refuse to write most hostile ones.
pub mod tarb {
    pub const BLOCK: usize = 512;

    /// One entry's header fields. Names and link targets are written straight into their
    /// fields, so that names a tar library would refuse (`..`, absolute) can be built.
    pub struct Ent<'a> {
        pub name: &'a [u8],
        pub kind: tar::EntryType,
        pub mode: u32,
        pub uid: u64,
        pub gid: u64,
        pub mtime: u64,
        pub link: &'a [u8],
        pub data: &'a [u8],
        pub dev: (u32, u32),
    }

    impl<'a> Ent<'a> {
        /// An entry with mode 0755 (folders) or 0644, owner 0, mtime 0, no data.
        pub fn new(name: &'a str, kind: tar::EntryType) -> Ent<'a> {
            Ent {
                name: name.as_bytes(),
                kind,
                mode: if kind == tar::EntryType::Directory {
                    0o755
                } else {
                    0o644
                },
                uid: 0,
                gid: 0,
                mtime: 0,
                link: b"",
                data: b"",
                dev: (0, 0),
            }
        }

        /// The ustar header block (its size field is the data's length).
        pub fn header(&self) -> [u8; BLOCK] {
            self.header_claiming(self.data.len() as u64)
        }

        /// The ustar header block with `size` in its size field, whatever the data.
        pub fn header_claiming(&self, size: u64) -> [u8; BLOCK] {
            let mut h = tar::Header::new_ustar();
            h.set_mode(self.mode);
            h.set_uid(self.uid);
            h.set_gid(self.gid);
            h.set_mtime(self.mtime);
            h.set_size(size);
            h.set_entry_type(self.kind);
            if self.kind.is_character_special() || self.kind.is_block_special() {
                h.set_device_major(self.dev.0).unwrap();
                h.set_device_minor(self.dev.1).unwrap();
            }
            {
                let old = h.as_old_mut();
                assert!(
                    self.name.len() <= old.name.len(),
                    "name too long for the field"
                );
                old.name[..self.name.len()].copy_from_slice(self.name);
                assert!(
                    self.link.len() <= old.linkname.len(),
                    "link too long for the field"
                );
                old.linkname[..self.link.len()].copy_from_slice(self.link);
            }
            h.set_cksum();
            *h.as_bytes()
        }
    }

    /// A header for `name` (and `link`) claiming `size` bytes of data, whatever follows.
    pub fn header(name: &[u8], kind: tar::EntryType, size: usize, link: &[u8]) -> [u8; BLOCK] {
        Ent {
            name,
            link,
            ..Ent::new("", kind)
        }
        .header_claiming(size as u64)
    }

    /// Appends one entry (header, data, padding).
    pub fn entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
        out.extend_from_slice(&header(name.as_bytes(), kind, data.len(), link.as_bytes()));
        out.extend_from_slice(data);
        pad(out);
    }

    pub fn pad(out: &mut Vec<u8>) {
        let rem = out.len() % BLOCK;
        if rem != 0 {
            out.resize(out.len() + BLOCK - rem, 0);
        }
    }

    pub fn file(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        entry(out, name, tar::EntryType::Regular, "", data);
    }

    pub fn dir(out: &mut Vec<u8>, name: &str) {
        entry(out, name, tar::EntryType::Directory, "", b"");
    }

    pub fn symlink(out: &mut Vec<u8>, name: &str, target: &str) {
        entry(out, name, tar::EntryType::Symlink, target, b"");
    }

    pub fn hardlink(out: &mut Vec<u8>, name: &str, target: &str) {
        entry(out, name, tar::EntryType::Link, target, b"");
    }

    /// A pax extended header setting `path` for the next entry.
    pub fn pax_path(out: &mut Vec<u8>, path: &str) {
        let record = pax_record("path", path);
        entry(
            out,
            "PaxHeaders/x",
            tar::EntryType::XHeader,
            "",
            record.as_bytes(),
        );
    }

    /// A GNU long-name entry setting the name of the next entry.
    pub fn gnu_long_name(out: &mut Vec<u8>, name: &str) {
        let mut h = tar::Header::new_gnu();
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&data);
        pad(out);
    }

    /// The end-of-archive marker.
    pub fn finish(mut out: Vec<u8>) -> Vec<u8> {
        out.extend_from_slice(&[0u8; 2 * BLOCK]);
        out
    }

    /// A tar written entry by entry, with full control of names, metadata, links, devices and
    /// pax xattrs (for image layers).
    #[derive(Default)]
    pub struct Tar {
        out: Vec<u8>,
    }

    /// Default mtime of [`Tar`]'s entries.
    const TAR_MTIME: u64 = 1_600_000_000;

    impl Tar {
        /// Appends `e` (header, data, padding).
        pub fn put(&mut self, e: Ent) -> &mut Tar {
            self.out.extend_from_slice(&e.header());
            self.out.extend_from_slice(e.data);
            pad(&mut self.out);
            self
        }

        pub fn dir(&mut self, name: &str, mode: u32) -> &mut Tar {
            self.put(Ent {
                mode,
                mtime: TAR_MTIME,
                ..Ent::new(name, tar::EntryType::Directory)
            })
        }

        pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
            self.put(Ent {
                data,
                mtime: TAR_MTIME,
                ..Ent::new(name, tar::EntryType::Regular)
            })
        }

        pub fn owned(
            &mut self,
            name: &str,
            data: &[u8],
            mode: u32,
            uid: u64,
            gid: u64,
        ) -> &mut Tar {
            self.put(Ent {
                data,
                mode,
                uid,
                gid,
                mtime: 1_700_000_000,
                ..Ent::new(name, tar::EntryType::Regular)
            })
        }

        pub fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
            self.put(Ent {
                link: target.as_bytes(),
                mode: 0o777,
                mtime: TAR_MTIME,
                ..Ent::new(name, tar::EntryType::Symlink)
            })
        }

        pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Tar {
            self.put(Ent {
                link: target.as_bytes(),
                mtime: TAR_MTIME,
                ..Ent::new(name, tar::EntryType::Link)
            })
        }

        /// A pax header giving the next entry an extended attribute.
        pub fn xattr(&mut self, key: &str, value: &str) -> &mut Tar {
            let record = pax_record(&format!("SCHILY.xattr.{key}"), value);
            self.put(Ent {
                data: record.as_bytes(),
                mtime: TAR_MTIME,
                ..Ent::new("PaxHeader", tar::EntryType::XHeader)
            })
        }

        /// The archive, with its end-of-archive marker.
        pub fn finish(&mut self) -> Vec<u8> {
            finish(std::mem::take(&mut self.out))
        }
    }

    /// One pax record `LEN key=value\n` (the length counts its own digits).
    pub fn pax_record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}").len() + body.len() != len {
            len += 1;
        }
        format!("{len}{body}")
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}
