//! RFC 8285 header extension elements (one-byte and two-byte forms).

/// "Defined by profile" value of the one-byte form (RFC 8285 4.2).
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// "Defined by profile" value of the two-byte form with appbits 0 (RFC 8285 4.3).
pub const TWO_BYTE_PROFILE: u16 = 0x1000;
/// Mask over the profile field that leaves out the 4 appbits of the two-byte form.
pub const TWO_BYTE_PROFILE_MASK: u16 = 0xfff0;

/// One-byte form ID that ends processing of the whole extension (RFC 8285 4.2).
const ONE_BYTE_STOP_ID: u8 = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    None,
    OneByte,
    TwoByte,
}

/// Iterator over RFC 8285 elements, yielding `(id, data)`. Allocates nothing.
#[derive(Clone, Debug)]
pub struct ExtensionIter<'a> {
    data: &'a [u8],
    form: Form,
}

impl<'a> ExtensionIter<'a> {
    pub(crate) fn new(profile: u16, data: &'a [u8]) -> Self {
        let form = if profile == ONE_BYTE_PROFILE {
            Form::OneByte
        } else if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE {
            Form::TwoByte
        } else {
            Form::None
        };
        ExtensionIter { data, form }
    }

    pub(crate) fn empty() -> Self {
        ExtensionIter {
            data: &[],
            form: Form::None,
        }
    }

    fn stop(&mut self) -> Option<(u8, &'a [u8])> {
        self.data = &[];
        None
    }

    /// RFC 8285 4.2, one-byte header:
    ///
    /// ```text
    ///  0
    ///  0 1 2 3 4 5 6 7
    /// +-+-+-+-+-+-+-+-+
    /// |  ID   |  len  |   len = data bytes - 1; ID 0 is padding, ID 15 stops processing
    /// +-+-+-+-+-+-+-+-+
    /// ```
    fn next_one_byte(&mut self) -> Option<(u8, &'a [u8])> {
        loop {
            let (&first, rest) = self.data.split_first()?;
            if first == 0 {
                // A padding byte between or after elements.
                self.data = rest;
                continue;
            }
            let id = first >> 4;
            if id == ONE_BYTE_STOP_ID || id == 0 {
                // ID 15: stop here. ID 0 with a non-zero length is not padding: treat as malformed.
                return self.stop();
            }
            let len = usize::from(first & 0x0f) + 1;
            if len > rest.len() {
                return self.stop();
            }
            let (elem, tail) = rest.split_at(len);
            self.data = tail;
            return Some((id, elem));
        }
    }

    /// RFC 8285 4.3, two-byte header:
    ///
    /// ```text
    ///  0                   1
    ///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |       ID      |     length    |   length = data bytes (0 allowed); ID 0 is a padding byte
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    fn next_two_byte(&mut self) -> Option<(u8, &'a [u8])> {
        loop {
            let (&id, rest) = self.data.split_first()?;
            if id == 0 {
                self.data = rest;
                continue;
            }
            let Some((&len, rest)) = rest.split_first() else {
                return self.stop();
            };
            let len = usize::from(len);
            if len > rest.len() {
                return self.stop();
            }
            let (elem, tail) = rest.split_at(len);
            self.data = tail;
            return Some((id, elem));
        }
    }
}

impl<'a> Iterator for ExtensionIter<'a> {
    type Item = (u8, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self.form {
            Form::OneByte => self.next_one_byte(),
            Form::TwoByte => self.next_two_byte(),
            Form::None => None,
        }
    }
}

impl core::iter::FusedIterator for ExtensionIter<'_> {}
