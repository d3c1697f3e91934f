//! Copies of messages between the bus and a link: the same call, reply or signal
//! under a new header.
//!
//! A body is decoded as one structure of its arguments and encoded again: copying
//! the raw bytes would need zbus's `unsafe` `build_raw_body`. File descriptors
//! survive (they are duplicated into the new message), so `Open`'s source
//! arrives. The one thing lost is the difference between a single struct
//! argument `(ss)` and two arguments `ss` (zvariant parses both alike); no method
//! or signal of ours has a single struct argument.

use zbus::message::{Body, Builder, Flags, Header, Type};
use zbus::names::UniqueName;
use zbus::zvariant::{Signature, Structure};
use zbus::{Connection, Message};

/// Encodes `body` (no arguments, or a structure of them) into `builder`'s message.
fn build(builder: Builder<'_>, body: &Body) -> zbus::Result<Message> {
    if *body.signature() == Signature::Unit {
        return builder.build(&());
    }
    let arguments: Structure<'_> = body.deserialize()?;
    builder.build(&arguments)
}

/// Makes the call `call` (from the bus) on `link` and returns the reply (a method
/// return or an error), or `None` when the caller asked for no reply.
pub async fn call(link: &Connection, call: &Message) -> zbus::Result<Option<Message>> {
    let header = call.header();
    let (Some(path), Some(member)) = (header.path(), header.member()) else {
        return Err(zbus::Error::MissingField);
    };
    let interface = header.interface().cloned();
    let body = call.body();
    if header.primary().flags().contains(Flags::NoReplyExpected) {
        let mut builder = Message::method_call(path.clone(), member.clone())?
            .with_flags(Flags::NoReplyExpected)?;
        if let Some(interface) = interface {
            builder = builder.interface(interface)?;
        }
        link.send(&build(builder, &body)?).await?;
        return Ok(None);
    }
    // zbus's own call, which routes the reply to us by its serial.
    let reply = if *body.signature() == Signature::Unit {
        link.call_method(None::<&str>, path, interface, member, &())
            .await
    } else {
        let arguments: Structure<'_> = body.deserialize()?;
        link.call_method(None::<&str>, path, interface, member, &arguments)
            .await
    };
    match reply {
        Ok(reply) => Ok(Some(reply)),
        // An error reply is still the reply, passed on as it is.
        Err(zbus::Error::MethodError(_, _, reply)) => Ok(Some(reply)),
        Err(e) => Err(e),
    }
}

/// The bus's copy of `reply` (from a link) to the bus call whose header is `call`.
pub fn reply(call: &Header<'_>, reply: &Message) -> zbus::Result<Message> {
    let reply_header = reply.header();
    let builder = match (reply.message_type(), reply_header.error_name()) {
        (Type::Error, Some(name)) => Message::error(call, name.clone())?,
        _ => Message::method_return(call)?,
    };
    build(builder, &reply.body())
}

/// The bus's copy of `signal` (from a link) for `destination` alone: signals
/// about a user's workspaces are unicast, never broadcast.
pub fn signal(signal: &Message, destination: &UniqueName<'_>) -> zbus::Result<Message> {
    let header = signal.header();
    let (Some(path), Some(interface), Some(member)) =
        (header.path(), header.interface(), header.member())
    else {
        return Err(zbus::Error::MissingField);
    };
    let builder = Message::signal(path.clone(), interface.clone(), member.clone())?
        .destination(destination.clone())?;
    build(builder, &signal.body())
}
