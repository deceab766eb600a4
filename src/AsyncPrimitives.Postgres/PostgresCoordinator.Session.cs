using AsyncPrimitives.Postgres.Internal;

namespace AsyncPrimitives.Postgres;

// The session: opened on first use and shared by the calls meanwhile, replaced when it ends, and the interval of its
// heartbeat (every third of the shortest lease duration in use).
public sealed partial class PostgresCoordinator
{
    /// <summary>The open session; replaced when it ends. Guarded by <see cref="_sync"/>.</summary>
    private Session? _session;

    /// <summary>The session being opened, shared by the calls that need it meanwhile. Guarded by <see cref="_sync"/>.</summary>
    private Task<Session>? _connecting;

    /// <summary>The shortest lease duration in use (the coordinator's, or a queue's): the heartbeat beats every third of it.</summary>
    private TimeSpan _shortestLease;

    /// <summary>Completed, and replaced, when <see cref="_shortestLease"/> gets shorter; guarded by <see cref="_sync"/>.</summary>
    private TaskCompletionSource _leaseShortened = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The open session, or null; for tests.</summary>
    internal Session? CurrentSession
    {
        get
        {
            lock (_sync)
            {
                return _session;
            }
        }
    }

    /// <summary>The open session; opens one (shared by the callers meanwhile) when there is none or it ended.</summary>
    internal ValueTask<Session> GetSessionAsync(CancellationToken cancellationToken)
    {
        Task<Session> connecting;
        lock (_sync)
        {
            ThrowIfDisposed();
            if (_session is { IsEnded: false } session)
            {
                return new ValueTask<Session>(session);
            }

            // Started on the thread pool, never inline: ConnectAsync clears _connecting under this lock, which must
            // happen after the assignment here, even when every step of it completes synchronously.
            _connecting ??= Background.Run(ConnectAsync);
            connecting = _connecting;
        }

        return new ValueTask<Session>(connecting.WaitAsync(cancellationToken));
    }

    /// <summary>Notes a lease duration in use (a queue's), so that the heartbeat beats often enough for it: a shorter
    /// one than any before ends the heartbeat's wait for its next beat, which was measured for the longer one.</summary>
    internal void UseLeaseDuration(TimeSpan duration)
    {
        TaskCompletionSource? shortened = null;
        lock (_sync)
        {
            if (duration < _shortestLease)
            {
                _shortestLease = duration;
                shortened = _leaseShortened;
                _leaseShortened = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }

        shortened?.SetResult();
    }

    /// <summary>How often the heartbeat beats (every third of the shortest lease duration in use), and a task that
    /// completes when a shorter lease comes into use.</summary>
    internal (TimeSpan Interval, Task Shortened) HeartbeatInterval()
    {
        lock (_sync)
        {
            return (_shortestLease / 3, _leaseShortened.Task);
        }
    }

    private async Task<Session> ConnectAsync()
    {
        Session session;
        try
        {
            session = await Session.OpenAsync(this, _closing.Token).ConfigureAwait(false);
        }
        catch (Exception) when (_closing.IsCancellationRequested)
        {
            lock (_sync)
            {
                _connecting = null;
            }

            // The disposal cancelled the opening (or came while it failed): the callers waiting for the session see the
            // disposal.
            throw new ObjectDisposedException(nameof(PostgresCoordinator));
        }
        catch
        {
            lock (_sync)
            {
                _connecting = null;
            }

            throw;
        }

        bool disposed;
        lock (_sync)
        {
            _connecting = null;
            disposed = IsDisposed;
            if (!disposed)
            {
                _session = session;
            }
        }

        if (disposed)
        {
            await session.StopAsync(new ObjectDisposedException(nameof(PostgresCoordinator))).ConfigureAwait(false);
            throw new ObjectDisposedException(nameof(PostgresCoordinator));
        }

        return session;
    }
}
