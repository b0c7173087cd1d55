//! The client's TCP socket: bound to a chosen local address, its port left to `connect`.

/// A TCP socket bound to the local address `local`, its port left for `connect` to
/// choose (what [`ClientBuilder::local_address`](crate::ClientBuilder::local_address) uses).
///
/// A bind to port 0 reserves an ephemeral port that no other socket on the address may
/// use, and finding one means a search through every port the address holds: with
/// thousands of connections and TIME_WAITs on one address (a load generator, a
/// reconnect storm) that costs milliseconds of kernel time per socket. On Linux the
/// socket is marked `IP_BIND_ADDRESS_NO_PORT`, so `connect` picks the port and only
/// needs the four-tuple to be free.
pub fn local_socket(local: std::net::IpAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    ) {
        tracing::debug!(error = %e, "IP_BIND_ADDRESS_NO_PORT failed");
    }
    socket.bind(std::net::SocketAddr::new(local, 0))?;
    Ok(socket)
}
