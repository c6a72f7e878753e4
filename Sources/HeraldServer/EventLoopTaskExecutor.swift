import NIOCore

/// Runs a task's jobs on one event loop. An HTTP connection's task prefers its channel's loop
/// (`withTaskExecutorPreference`), so a request is read, handled and answered on the thread
/// that owns its socket: no hop to the cooperative pool and back per request, and NIO's
/// async channel writes take their in-loop path. Handlers must not block: everything they
/// await (etcd, Kafka, peers) suspends; librdkafka's blocking calls run on threads of their own.
final class EventLoopTaskExecutor: TaskExecutor {
    private let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        eventLoop.execute { job.runSynchronously(on: executor) }
    }

    func asUnownedTaskExecutor() -> UnownedTaskExecutor {
        UnownedTaskExecutor(ordinary: self)
    }
}
