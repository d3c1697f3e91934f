//! Who a bus client is: the uid that the bus daemon vouches for
//! (`GetConnectionCredentials` of the message's sender), never anything the
//! message itself says. A client whose uid cannot be read is refused.

use zbus::fdo::DBusProxy;
use zbus::names::UniqueName;

use crate::manager::Caller;

/// Why a bus client's identity is unknown (its call is then refused).
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The bus did not answer `GetConnectionCredentials`.
    #[error("cannot read the credentials of {name} from the bus, so its call is refused")]
    Query {
        name: String,
        source: zbus::fdo::Error,
    },
    /// The bus answered without a uid (not a Unix-socket client).
    #[error("the bus reports no user id for {name}, so its call is refused")]
    NoUid { name: String },
    /// Neither the user database nor the bus names a group for the uid.
    #[error(
        "user {uid} (bus client {name}) has no entry in the user database and the bus reports no group for it, so its call is refused"
    )]
    NoGroup { name: String, uid: u32 },
}

/// The caller behind the bus client `name`.
///
/// The bus reports the uid. The primary group is the user database's for that
/// uid (the bus reports groups only as an unordered set); a uid with no entry
/// there gets the lowest group the bus reports, one it is a member of.
pub async fn caller(
    dbus: &DBusProxy<'_>,
    name: &UniqueName<'_>,
) -> Result<Caller, CredentialsError> {
    let credentials = dbus
        .get_connection_credentials(zbus::names::BusName::Unique(name.clone()))
        .await
        .map_err(|source| CredentialsError::Query {
            name: name.to_string(),
            source,
        })?;
    let uid = credentials
        .unix_user_id()
        .ok_or_else(|| CredentialsError::NoUid {
            name: name.to_string(),
        })?;
    // The user database may be remote (NSS), so it is asked off the runtime.
    let primary = tokio::task::spawn_blocking(move || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|user| user.gid.as_raw())
    })
    .await
    .ok()
    .flatten();
    let gid = primary
        .or_else(|| credentials.unix_group_ids()?.iter().copied().min())
        .ok_or_else(|| CredentialsError::NoGroup {
            name: name.to_string(),
            uid,
        })?;
    Ok(Caller { uid, gid })
}
