namespace AsyncPrimitives.Tests.Support;

/// <summary>
/// Runs two actions at the same moment on two threads, over and over, for race loops: the caller runs one, a
/// dedicated background thread runs the other, and a <see cref="Barrier"/> lines them up before and after.
/// </summary>
internal sealed class Racer : IDisposable
{
    private static readonly TimeSpan s_meetTimeout = TimeSpan.FromSeconds(10);

    private readonly Barrier _barrier = new(2);
    private readonly Thread _thread;
    private Action? _theirs;
    private Exception? _error;
    private volatile bool _stopping;

    public Racer()
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = "Racer" };
        _thread.Start();
    }

    /// <summary>Runs <paramref name="mine"/> here and <paramref name="theirs"/> on the racer thread, both released
    /// at once; returns when both are done. Each side first spins a random few iterations (up to
    /// <paramref name="maxSpin"/>) so that every interleaving gets its turn.</summary>
    public void Race(Action mine, Action theirs, Random random, int maxSpin = 64)
    {
        int mySpin = random.Next(maxSpin);
        int theirSpin = random.Next(maxSpin);
        _theirs = () =>
        {
            Thread.SpinWait(theirSpin);
            theirs();
        };
        Meet();
        try
        {
            Thread.SpinWait(mySpin);
            mine();
        }
        finally
        {
            Meet();
        }

        if (Interlocked.Exchange(ref _error, null) is { } error)
        {
            throw new InvalidOperationException("The racing action failed.", error);
        }
    }

    public void Dispose()
    {
        _stopping = true;
        _barrier.SignalAndWait(s_meetTimeout);
        _thread.Join(s_meetTimeout);
        _barrier.Dispose();
    }

    private void Meet()
    {
        if (!_barrier.SignalAndWait(s_meetTimeout))
        {
            throw new TimeoutException("The racer thread did not arrive.");
        }
    }

    private void Loop()
    {
        while (_barrier.SignalAndWait(s_meetTimeout) && !_stopping)
        {
            try
            {
                _theirs!();
            }
            catch (Exception e)
            {
                _error = e;
            }

            if (!_barrier.SignalAndWait(s_meetTimeout))
            {
                return;
            }
        }
    }
}
