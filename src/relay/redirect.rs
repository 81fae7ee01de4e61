//! Azure SQL redirection: a routing ENVCHANGE (type 20, [MS-TDS] 2.2.7.9) in
//! a login response tells the client to reconnect elsewhere. tdsguard
//! follows it itself (a new upstream connection, still TLS-verified against
//! the new host name, and the same LOGIN7) and never shows the routing token
//! to the application. Loops are bounded by `upstream.max_redirects`.

use crate::relay::error::RelayError;
use crate::relay::upstream::Target;
use crate::tds::token::Routing;

/// Routing protocol 0: TCP, ProtocolProperty is the port (2.2.7.9).
const PROTOCOL_TCP: u8 = 0x00;

/// Where a routing token points. AlternateServer may carry an instance name
/// after a backslash, which a TCP connection does not use.
pub fn target(routing: &Routing) -> Result<Target, RelayError> {
    if routing.protocol != PROTOCOL_TCP {
        return Err(RelayError::BadRouting {
            protocol: routing.protocol,
        });
    }
    let server = routing.server.to_string_lossy();
    let host = server.split('\\').next().unwrap_or_default().to_owned();
    Ok(Target {
        host,
        port: routing.port,
    })
}

/// Counts the redirects of one login.
#[derive(Debug)]
pub struct RedirectBudget {
    followed: u8,
    max: u8,
}

impl RedirectBudget {
    pub fn new(max: u8) -> Self {
        RedirectBudget { followed: 0, max }
    }

    /// Takes one redirect, or fails when the budget is spent.
    pub fn take(&mut self) -> Result<(), RelayError> {
        if self.followed >= self.max {
            return Err(RelayError::TooManyRedirects { max: self.max });
        }
        self.followed += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(protocol: u8, server: &str) -> Routing {
        Routing {
            protocol,
            port: 11_000,
            server: server.into(),
        }
    }

    #[test]
    fn tcp_routing_gives_host_and_port() {
        let target = target(&routing(0, "w1.tr5.westeurope.worker.example.net")).unwrap();
        assert_eq!(target.host, "w1.tr5.westeurope.worker.example.net");
        assert_eq!(target.port, 11_000);
    }

    #[test]
    fn instance_name_is_dropped() {
        assert_eq!(target(&routing(0, "host\\INST")).unwrap().host, "host");
    }

    #[test]
    fn other_protocols_are_refused() {
        assert!(matches!(
            target(&routing(1, "h")),
            Err(RelayError::BadRouting { protocol: 1 })
        ));
    }

    #[test]
    fn budget_allows_max_then_fails() {
        let mut budget = RedirectBudget::new(2);
        assert!(budget.take().is_ok());
        assert!(budget.take().is_ok());
        assert!(matches!(
            budget.take(),
            Err(RelayError::TooManyRedirects { max: 2 })
        ));
    }
}
