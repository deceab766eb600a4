namespace AsyncIterTools.Tests;

public sealed class OutcomeTests
{
    [Fact]
    public void FromValue_IsSuccess()
    {
        Outcome<int> o = Outcome<int>.FromValue(42);
        o.IsSuccess.Should().BeTrue();
        o.Value.Should().Be(42);
        o.Exception.Should().BeNull();
        o.TryGetValue(out int v).Should().BeTrue();
        v.Should().Be(42);
        o.GetValueOrThrow().Should().Be(42);
        o.ToString().Should().Be("Success(42)");
    }

    [Fact]
    public void FromException_IsFailure_AndValueThrows()
    {
        var boom = new InvalidOperationException("boom");
        Outcome<int> o = Outcome<int>.FromException(boom);
        o.IsSuccess.Should().BeFalse();
        o.Exception.Should().BeSameAs(boom);
        o.TryGetValue(out _).Should().BeFalse();
        FluentActions.Invoking(() => o.Value).Should().Throw<InvalidOperationException>().Which.InnerException.Should().BeSameAs(boom);
        FluentActions.Invoking(() => o.GetValueOrThrow()).Should().Throw<InvalidOperationException>().Which.Should().BeSameAs(boom);
        o.ToString().Should().Be("Failure(InvalidOperationException: boom)");
    }

    [Fact]
    public void FromException_Null_Throws()
    {
        FluentActions.Invoking(() => Outcome<int>.FromException(null!)).Should().Throw<ArgumentNullException>().WithParameterName("exception");
    }

    [Fact]
    public void Equality_ComparesValuesOrExceptionInstances()
    {
        var boom = new InvalidOperationException();
        (Outcome<int>.FromValue(1) == Outcome<int>.FromValue(1)).Should().BeTrue();
        (Outcome<int>.FromValue(1) != Outcome<int>.FromValue(2)).Should().BeTrue();
        Outcome<int>.FromException(boom).Should().Be(Outcome<int>.FromException(boom));
        Outcome<int>.FromException(boom).Equals(Outcome<int>.FromException(new InvalidOperationException())).Should().BeFalse();
        default(Outcome<string>).IsSuccess.Should().BeTrue();
    }
}
