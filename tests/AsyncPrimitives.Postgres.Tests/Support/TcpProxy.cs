using System.Net;
using System.Net.Sockets;

namespace AsyncPrimitives.Postgres.Tests.Support;

/// <summary>
/// A TCP relay in front of the test server, to cut a client off without the server noticing: <see cref="Freeze"/>
/// stops relaying bytes while every connection stays open (a network partition: the server still sees its sessions
/// alive), <see cref="Thaw"/> resumes, <see cref="Sever"/> closes every connection at once (a dropped connection).
/// <see cref="HoldReplies"/> holds back what the server sends on one connection (an answer that comes late);
/// <see cref="HoldNextConnection"/> holds back what the client sends on the next connection opened (an opening that
/// gets no answer yet), and only on it.
/// </summary>
public sealed class TcpProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly IPEndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _sync = new();
    private readonly List<Socket> _sockets = [];
    private readonly Task _accepting;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<int, TaskCompletionSource> _replyHolds = new();
    private TaskCompletionSource _open = NewOpenGate(opened: true);
    private int _heldBack;
    private TaskCompletionSource? _nextConnectionHold;
    private TaskCompletionSource? _connectionHold;

    public TcpProxy(string host, int port)
    {
        _target = new IPEndPoint(IPAddress.Parse(host), port);
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>Reads held back by <see cref="Freeze"/> now (a relay that has bytes to pass on and waits).</summary>
    public int HeldBack => Volatile.Read(ref _heldBack);

    /// <summary>Stops relaying; connections stay open, bytes wait.</summary>
    public void Freeze()
    {
        lock (_sync)
        {
            if (_open.Task.IsCompleted)
            {
                _open = NewOpenGate(opened: false);
            }
        }
    }

    /// <summary>Resumes relaying.</summary>
    public void Thaw()
    {
        lock (_sync)
        {
            _open.TrySetResult();
        }
    }

    /// <summary>Holds back what the server sends on the connection it sees coming from <paramref name="clientPort"/>
    /// (<c>pg_stat_activity.client_port</c>) until <see cref="ReleaseReplies"/>.</summary>
    public void HoldReplies(int clientPort) =>
        _replyHolds[clientPort] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Relays what <see cref="HoldReplies"/> held back, and what comes after it.</summary>
    public void ReleaseReplies(int clientPort)
    {
        if (_replyHolds.TryRemove(clientPort, out TaskCompletionSource? hold))
        {
            hold.TrySetResult();
        }
    }

    /// <summary>Closes every relayed connection (new ones are still accepted).</summary>
    public void Sever()
    {
        Socket[] sockets;
        lock (_sync)
        {
            sockets = [.. _sockets];
            _sockets.Clear();
        }

        foreach (Socket socket in sockets)
        {
            socket.LingerState = new LingerOption(true, 0); // reset, not a polite close
            socket.Dispose();
        }
    }

    /// <summary>Holds what the client sends on the next connection accepted (its opening does not reach the server)
    /// until <see cref="ReleaseHeldConnection"/>; the connections after it are relayed as usual.</summary>
    public void HoldNextConnection() =>
        Volatile.Write(ref _nextConnectionHold, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));

    /// <summary>Relays what <see cref="HoldNextConnection"/> held back, and what comes after it.</summary>
    public void ReleaseHeldConnection()
    {
        Interlocked.Exchange(ref _nextConnectionHold, null)?.TrySetResult();
        Volatile.Read(ref _connectionHold)?.TrySetResult();
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        ReleaseHeldConnection();
        _listener.Stop();
        Thaw();
        foreach (int port in _replyHolds.Keys)
        {
            ReleaseReplies(port);
        }

        Sever();
        await _accepting.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptSocketAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            var server = new Socket(SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await server.ConnectAsync(_target, _stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException)
            {
                client.Dispose();
                server.Dispose();
                continue;
            }

            lock (_sync)
            {
                _sockets.Add(client);
                _sockets.Add(server);
            }

            TaskCompletionSource? hold = Interlocked.Exchange(ref _nextConnectionHold, null);
            if (hold is not null)
            {
                Volatile.Write(ref _connectionHold, hold);
            }

            _ = PumpAsync(client, server, replyPort: null, hold?.Task);
            _ = PumpAsync(server, client, ((IPEndPoint)server.LocalEndPoint!).Port);
        }
    }

    /// <summary>Waits for <paramref name="gate"/> before relaying, counted in <see cref="HeldBack"/> while it waits.</summary>
    private async Task HoldBackAsync(Task gate)
    {
        if (gate.IsCompleted)
        {
            return;
        }

        Interlocked.Increment(ref _heldBack);
        try
        {
            await gate.WaitAsync(_stop.Token);
        }
        finally
        {
            Interlocked.Decrement(ref _heldBack);
        }
    }

    /// <param name="replyPort">For the server's side: the port the server sees the connection coming from.</param>
    /// <param name="hold">For the client's side of a connection held by <see cref="HoldNextConnection"/>: relays once
    /// it completes.</param>
    private async Task PumpAsync(Socket from, Socket to, int? replyPort, Task? hold = null)
    {
        byte[] buffer = new byte[16 * 1024];
        try
        {
            while (true)
            {
                int read = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                if (read == 0)
                {
                    break;
                }

                Task open;
                lock (_sync)
                {
                    open = _open.Task;
                }

                if (hold is not null)
                {
                    await HoldBackAsync(hold);
                }

                await HoldBackAsync(open);

                if (replyPort is int port && _replyHolds.TryGetValue(port, out TaskCompletionSource? replyHold))
                {
                    await replyHold.Task.WaitAsync(_stop.Token);
                }

                await to.SendAsync(buffer.AsMemory(0, read), SocketFlags.None, _stop.Token);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // Severed or stopped.
        }

        try
        {
            to.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already gone.
        }
    }

    private static TaskCompletionSource NewOpenGate(bool opened)
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (opened)
        {
            gate.SetResult();
        }

        return gate;
    }
}
