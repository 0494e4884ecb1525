import Foundation
import Hummingbird
import NIOCore
import NIOHTTP1

/// Closes connections past a limit as soon as they open. One counter is shared by every
/// connection's handler.
// @unchecked: `admitted` is touched only by NIO on the connection's own event loop.
final class ConnectionLimiter: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = Never

    final class Counter: @unchecked Sendable {
        // `open` is only touched under `lock`.
        let limit: Int
        private let lock = NSLock()
        private var open = 0

        init(limit: Int) { self.limit = max(1, limit) }

        /// Counts a new connection; false when it would pass the limit (then not counted).
        func admit() -> Bool {
            lock.lock(); defer { lock.unlock() }
            guard open < limit else { return false }
            open += 1
            return true
        }

        func leave() { lock.lock(); open -= 1; lock.unlock() }
    }

    let counter: Counter
    private var admitted = false

    init(counter: Counter) { self.counter = counter }

    func handlerAdded(context: ChannelHandlerContext) {
        if counter.admit() {
            admitted = true
        } else {
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if admitted { counter.leave() }
        admitted = false
        context.fireChannelInactive()
    }
}

/// HTTP/1 connection rules that the router cannot apply, because Swift's HTTP types carry no
/// protocol version: a request that does not keep the connection alive (HTTP/1.0 without
/// `Connection: keep-alive`, or `Connection: close` in any spelling) and a request declaring a body
/// over the limit are marked `Connection: close`, and so is their response. Hummingbird then closes
/// the connection after that response, instead of waiting for another request (HTTP/1.0) or for a
/// body nobody will read (the 413 case).
///
/// It also tells the request being answered when its client hangs up. Hummingbird keeps a
/// connection open after the client's end of it closes (remote half-closure), so nothing else
/// notices; like nginx, a client that closes its side before its answer has abandoned it.
///
/// It must sit between NIO's HTTP/1 decoder and the conversion to HTTP types: `Installer` puts it
/// there from the slot Hummingbird gives to extra handlers (after the conversion).
// @unchecked: `closing`, `inputClosed` and `watchers` are touched only on the connection's own
// event loop.
final class HTTP1ConnectionRules: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    let maxBodyBytes: Int
    /// For each request whose response has not ended, in order: whether the connection closes after it.
    private var closing: [Bool] = []
    private var inputClosed = false
    /// Set when the client hangs up before the current response ends.
    private var watchers: [CancellationFlag] = []

    init(maxBodyBytes: Int) { self.maxBodyBytes = maxBodyBytes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data) else {
            context.fireChannelRead(data)
            return
        }
        let declared = head.headers.first(name: "content-length").flatMap { Int($0) } ?? 0
        let close = !head.isKeepAlive || declared > maxBodyBytes
        if close { head.headers.replaceOrAdd(name: "connection", value: "close") }
        closing.append(close)
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head) where closing.first == true && head.status.code >= 200:
            head.headers.replaceOrAdd(name: "connection", value: "close")
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .end:
            if !closing.isEmpty { closing.removeFirst() }
            watchers.removeAll()
            context.write(data, promise: promise)
        default:
            context.write(data, promise: promise)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed { clientLeft() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        clientLeft()
        context.fireChannelInactive()
    }

    private func clientLeft() {
        inputClosed = true
        for flag in watchers { flag.cancel() }
        watchers.removeAll()
    }

    /// Sets `flag` when the client hangs up before the current response ends. Call on the event loop.
    func watch(_ flag: CancellationFlag) {
        if inputClosed { flag.cancel() } else { watchers.append(flag) }
    }

    /// Placed by Hummingbird after the conversion to HTTP types; moves `rules` in front of it and
    /// removes itself.
    final class Installer: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
        typealias InboundIn = Never
        let maxBodyBytes: Int

        init(maxBodyBytes: Int) { self.maxBodyBytes = maxBodyBytes }

        func handlerAdded(context: ChannelHandlerContext) {
            let pipeline = context.pipeline.syncOperations
            if let decoder = try? pipeline.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self) {
                try? pipeline.addHandler(HTTP1ConnectionRules(maxBodyBytes: maxBodyBytes), position: .after(decoder.handler))
            }
            pipeline.removeHandler(context: context, promise: nil)
        }
    }
}

/// The request context of every route: Hummingbird's basic one, plus the connection, so that a
/// generation can stop when its client hangs up.
public struct ServerRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// A flag set when the client hangs up or the connection closes: the generation loop reads it
    /// between tokens.
    func clientGoneFlag() -> CancellationFlag {
        let flag = CancellationFlag()
        let channel = self.channel
        channel.closeFuture.whenComplete { _ in flag.cancel() }
        channel.eventLoop.execute {
            (try? channel.pipeline.syncOperations.handler(type: HTTP1ConnectionRules.self))?.watch(flag)
        }
        return flag
    }
}
