//! COPY … TO STDOUT: mask the data stream.

