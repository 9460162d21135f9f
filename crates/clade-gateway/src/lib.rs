//! clade-gateway
