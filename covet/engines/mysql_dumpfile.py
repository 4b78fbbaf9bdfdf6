"""Reading mariadb-dump/mysqldump output: keep only some tables' sections, streaming.

The dump marks each table's part with comment lines such as
``-- Table structure for table `t``` and ``-- Dumping data for table `t```.
Such a line counts only where the client itself would see a comment
between statements: the scanner follows the mariadb client's own rules
(quotes with backslash escapes and doubled quotes, ``/* */`` comments,
``/*! */`` executable comments, ``--`` and ``#`` comments, DELIMITER), so
text inside a string literal, a routine body or a view can never pass for
a section marker, and nothing of a dropped section is ever sent.
"""

import re
from typing import BinaryIO

from covet.errors import NotFoundError

READ_SIZE = 1024 * 1024
_MARKER = re.compile(
    rb"^-- (Table structure for table|Dumping data for table|Temporary table structure for view|"
    rb"Temporary view structure for view|Final view structure for view|Dumping events for database|"
    rb"Dumping routines for database) (.*)$")
_TABLE_KINDS = {b"Table structure for table", b"Dumping data for table"}
_FOOTER = b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;"
_DELIMITER_COMMAND = re.compile(rb"^\s*delimiter\s+(\S+)", re.I)


def _unquote(text: bytes) -> str | None:
    match = re.fullmatch(rb"`((?:[^`]|``)*)`", text)
    return match.group(1).replace(b"``", b"`").decode("utf-8", "replace") if match else None


class _Scanner:
    """Where the mariadb client's parser stands at the start of each line."""

    def __init__(self):
        self.delimiter = b";"
        self.quote: bytes | None = None  # inside ', " or `
        self.comment = False  # inside /* */
        self.conditional = False  # inside /*! */ (code: quotes count)
        self.pending = False  # statement text since the last delimiter
        self._compile()

    def _compile(self) -> None:
        self._special = re.compile(rb"['\"`]|/\*|\*/|--(?=\s|$)|#|" + re.escape(self.delimiter))

    def between_statements(self) -> bool:
        return self.quote is None and not self.comment and not self.conditional and not self.pending

    def feed(self, line: bytes) -> None:
        """Advance over one line (without its newline)."""
        if self.between_statements():
            command = _DELIMITER_COMMAND.match(line)
            if command:
                self.delimiter = command.group(1)
                self._compile()
                return
        pos, end = 0, len(line)
        while pos < end:
            if self.quote is not None:
                pos = self._skip_string(line, pos)
                continue
            if self.comment:
                close = line.find(b"*/", pos)
                if close < 0:
                    return
                self.comment = False
                pos = close + 2
                continue
            match = self._special.search(line, pos)
            code = line[pos:match.start() if match else end]
            if code.strip():
                self.pending = True
            if not match:
                return
            token, pos = match.group(), match.end()
            if token in (b"'", b'"', b"`"):
                self.quote = token
                self.pending = True
            elif token == b"/*":
                if line[pos:pos + 1] in (b"!", b"+") or line[pos:pos + 2] == b"M!":
                    self.conditional = True
                    self.pending = True
                else:
                    self.comment = True
            elif token == b"*/":
                if self.conditional:
                    self.conditional = False
                else:
                    self.pending = True
            elif token in (b"--", b"#"):
                return  # comment to the end of the line
            else:  # the delimiter
                self.pending = False

    def _skip_string(self, line: bytes, pos: int) -> int:
        quote = self.quote
        while True:
            close = line.find(quote, pos)
            escape = line.find(b"\\", pos) if quote != b"`" else -1
            if escape >= 0 and (close < 0 or escape < close):
                pos = escape + 2
                if pos > len(line):
                    return len(line)  # a backslash before the newline escapes it
                continue
            if close < 0:
                return len(line)  # the string goes on past this line
            if line[close + 1:close + 2] == quote:
                pos = close + 2  # a doubled quote
                continue
            self.quote = None
            return close + 1


class TableFilter:
    """A readable stream of a dump that keeps its header, its footer and the named tables' sections only.

    At the end it raises NotFoundError naming any requested table the dump
    does not hold.
    """

    def __init__(self, stream: BinaryIO, tables: tuple[str, ...]):
        self.stream = stream
        self.wanted = set(tables)
        self.found: set[str] = set()
        self.scanner = _Scanner()
        self.keep = True  # the header
        self._rest = b""
        self._out = bytearray()
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._out) < size):
            chunk = self.stream.read(READ_SIZE)
            if not chunk:
                self._eof = True
                if self._rest:
                    self._line(self._rest)
                    self._rest = b""
                missing = sorted(self.wanted - self.found)
                if missing:
                    raise NotFoundError(f"table(s) not in this backup: {', '.join(missing)}")
                break
            lines = (self._rest + chunk).split(b"\n")
            self._rest = lines.pop()
            for line in lines:
                self._line(line + b"\n")
        if size < 0 or size >= len(self._out):
            data, self._out = bytes(self._out), bytearray()
        else:
            data, self._out = bytes(self._out[:size]), self._out[size:]
        return data

    def _line(self, line: bytes) -> None:
        text = line.rstrip(b"\r\n")
        if self.scanner.between_statements():
            marker = _MARKER.match(text)
            if marker:
                name = _unquote(marker.group(2))
                self.keep = marker.group(1) in _TABLE_KINDS and name in self.wanted
                if self.keep:
                    self.found.add(name)
            elif text == _FOOTER:
                self.keep = True
        self.scanner.feed(text)
        if self.keep:
            self._out += line
