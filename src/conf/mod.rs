//! The nginx configuration language: lexer, parser, includes, and the typed model.
